//! `berth_core::layers::apply` versus GNU `tar -x` of the same archive.
//!
//! The archive is made once per run by `tar -c` of a generated tree:
//! 10,000 small files (0–4 KiB) in 100 directories, 10 files of 10 MiB,
//! a few symlinks and hardlinks — about 120 MB. Each iteration unpacks it
//! into a fresh directory on the same filesystem (the tree's removal is not
//! timed). Pairs: `plain` (`apply` vs `tar -xf`) and `gzip` (`apply` of the
//! `.tar.gz` vs `tar -xzf`, which pipes through the `gzip` program).
//!
//! Set `BERTH_BENCH_DIR` to put the tree and the targets elsewhere (e.g.
//! `/dev/shm` to measure without the disk). `core/benches/layer_apply.sh`
//! runs this and prints the ratios. Budget (DESIGN.md): apply at least 90%
//! of the speed of `tar -x`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use berth_core::layers::{apply, ApplyOptions};

struct Fixture {
    base: PathBuf,
    plain: PathBuf,
    gzip: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn main() {
    divan::main();
    if let Some(f) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(&f.base);
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("run a command");
    assert!(st.success(), "{cmd:?} failed");
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let root = std::env::var_os("BERTH_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let base = root.join(format!("berth-layer-apply-{}", std::process::id()));
        let tree = base.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for d in 0..100 {
            let dir = tree.join(format!("dir{d:03}"));
            std::fs::create_dir(&dir).unwrap();
            for f in 0..100 {
                let len = (rng.next() % 4096) as usize;
                // Half text-like (compressible), half noise.
                let mut data = vec![b'a' + (f % 26) as u8; len];
                rng.fill(&mut data[..len / 2]);
                std::fs::write(dir.join(format!("file{f:03}.txt")), &data).unwrap();
            }
            std::os::unix::fs::symlink("file000.txt", dir.join("link")).unwrap();
            std::fs::hard_link(dir.join("file001.txt"), dir.join("hardlink")).unwrap();
        }
        let big = tree.join("big");
        std::fs::create_dir(&big).unwrap();
        let mut data = vec![0u8; 10 << 20];
        for i in 0..10 {
            rng.fill(&mut data);
            std::fs::write(big.join(format!("blob{i}")), &data).unwrap();
        }
        let plain = base.join("layer.tar");
        let gzip = base.join("layer.tar.gz");
        run(Command::new("tar").arg("-C").arg(&tree).arg("-cf").arg(&plain).arg("."));
        run(Command::new("tar").arg("-C").arg(&tree).arg("-czf").arg(&gzip).arg("."));
        std::fs::remove_dir_all(&tree).unwrap();
        Fixture { base, plain, gzip }
    })
}

/// A fresh, empty target directory beside the archives.
fn target() -> tempfile::TempDir {
    tempfile::tempdir_in(&fixture().base).unwrap()
}

fn berth_apply(archive: &Path, dir: tempfile::TempDir) -> tempfile::TempDir {
    let f = std::fs::File::open(archive).unwrap();
    apply(dir.path(), f, &ApplyOptions::default()).unwrap();
    dir
}

fn tar_x(flags: &str, archive: &Path, dir: tempfile::TempDir) -> tempfile::TempDir {
    run(Command::new("tar").arg(flags).arg(archive).arg("-C").arg(dir.path()));
    dir
}

#[divan::bench_group(sample_count = 10, sample_size = 1)]
mod plain {
    use super::*;

    #[divan::bench]
    fn apply(b: divan::Bencher) {
        let archive = &fixture().plain;
        b.with_inputs(target).bench_local_values(|d| berth_apply(archive, d));
    }

    #[divan::bench]
    fn tar_x(b: divan::Bencher) {
        let archive = &fixture().plain;
        b.with_inputs(target).bench_local_values(|d| super::tar_x("-xf", archive, d));
    }
}

#[divan::bench_group(sample_count = 10, sample_size = 1)]
mod gzip {
    use super::*;

    #[divan::bench]
    fn apply(b: divan::Bencher) {
        let archive = &fixture().gzip;
        b.with_inputs(target).bench_local_values(|d| berth_apply(archive, d));
    }

    #[divan::bench]
    fn tar_x(b: divan::Bencher) {
        let archive = &fixture().gzip;
        b.with_inputs(target).bench_local_values(|d| super::tar_x("-xzf", archive, d));
    }
}
