//! overlay2's native diff (`DiffDriver::diff`, read from the layer's upper
//! dir) beside GNU `tar -c` of the same upper dir, written to a sink.
//!
//! The layer is a read-write layer on a small base holding 10,000 files of
//! 1–4 KiB in 100 directories plus one 100 MB file, as written by a
//! container. `native_diff` is overlay2's export (whiteouts translated,
//! PAX headers for times and xattrs); `tar_c` is `tar -c -C <upper> .` to
//! /dev/null (GNU tar special-cases /dev/null and skips reading file
//! contents, so the output goes through a pipe to `cat >/dev/null`).
//! `bash plugins/storage/overlay2/benches/diff_ratio.sh` prints the ratio.
//!
//! Needs root: `cargo bench -p berth-storage-overlay2 --bench diff`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use berth_plugin_api::storage::*;
use berth_plugin_api::{Init, InitRequest, StorageDriver};
use berth_storage_overlay2::Overlay2Driver;

fn main() {
    divan::main();
}

/// A driver holding `base` and the filled read-write layer `ctr`.
struct Layer {
    driver: Overlay2Driver,
    upper: PathBuf,
    _dir: tempfile::TempDir,
}

impl Layer {
    fn new() -> Layer {
        let base = std::env::var("BERTH_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let dir = tempfile::tempdir_in(base).unwrap();
        let req = InitRequest::new(
            "overlay2",
            dir.path().join("root").to_str().unwrap(),
            dir.path().join("run").to_str().unwrap(),
        );
        let driver = match Overlay2Driver::new(req).unwrap() {
            Init::Ready(d) => d,
            Init::Skipped(why) => panic!("overlay2 declined: {why} (the bench needs root)"),
        };
        driver.create(CreateRequest::new("base", "")).unwrap();
        driver.create_rw(CreateRequest::new("ctr", "base")).unwrap();
        let upper =
            PathBuf::from(&driver.metadata(MetadataRequest::new("ctr")).unwrap().metadata["UpperDir"]);
        for d in 0..100 {
            let sub = upper.join(format!("d{d:03}"));
            std::fs::create_dir(&sub).unwrap();
            for f in 0..100 {
                let size = 1024 + (d * 100 + f) % 3072;
                std::fs::write(sub.join(format!("f{f:03}")), vec![(f % 251) as u8; size]).unwrap();
            }
        }
        let mut big = std::fs::File::create(upper.join("big.bin")).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..100 {
            big.write_all(&chunk).unwrap();
        }
        big.sync_all().unwrap();
        Layer { driver, upper, _dir: dir }
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = self.driver.cleanup(CleanupRequest::default());
    }
}

/// Counts bytes and drops them.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[divan::bench(sample_count = 10)]
fn native_diff(bencher: divan::Bencher) {
    let layer = Layer::new();
    let diff = layer.driver.as_diff().expect("overlay2 has a native diff");
    bencher.bench_local(|| {
        let mut sink = Sink(0);
        diff.diff(DiffRequest::new("ctr", "base"), &mut sink).unwrap();
        assert!(sink.0 > 100 << 20, "the diff holds the layer");
        sink.0
    });
}

#[divan::bench(sample_count = 10)]
fn tar_c(bencher: divan::Bencher) {
    let layer = Layer::new();
    bencher.bench_local(|| {
        let status = Command::new("sh")
            .arg("-c")
            .arg("tar -c -C \"$1\" . | cat >/dev/null")
            .arg("sh")
            .arg(&layer.upper)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    });
}
