//! Command lines and output parsing, against recorded outputs.
//!
//! Where the fixtures come from:
//!
//! * `USAGE`: the parent dataset's figures Docker's "Use the ZFS storage
//!   driver" page records from a real host (`docker info`: "Zpool:
//!   zpool-docker, Zpool Health: ONLINE, Parent Dataset: zpool-docker,
//!   Space Used By Parent: 249856, Space Available: 103498395648, Parent
//!   Quota: no, Compression: off"). moby read those exact figures with
//!   `zfs list -Hp`; here they are in the `zfs get -Hp -o property,value`
//!   form of zfs-get(8): one `property<TAB>value` line each.
//! * `LAYERS`, `SNAPSHOTS`, `POOL`: zfs-list(8) / zpool-list(8) `-H -p`
//!   lines (tab-separated, exact numbers) on that same `zpool-docker`
//!   dataset; the moby-made clone's origin is named the way moby names it
//!   (`<parent>@<nanoseconds>`, daemon/graphdriver/zfs/zfs.go).
//! * `HUMAN_POOL`: the example row of zpool-list(8) ("rpool 19.9G 8.43G
//!   11.4G ... ONLINE -"): what a listing looks like when `-p` is lost.
//! * stderr texts: the messages libzfs prints (`cannot create '...':
//!   dataset already exists`, `dataset does not exist`, `filesystem has
//!   children`, `snapshot has dependent clones`, "The ZFS modules are not
//!   loaded."), and util-linux umount's `not mounted.`.
//! * `MOUNTINFO`: proc(5)'s example line, and a zfs root line of an Ubuntu
//!   ZFS install (dataset `rpool/ROOT/ubuntu_ijuc69`, as recorded in
//!   linuxmint/timeshift#56).

use super::*;

const LAYERS: &str = "zpool-docker\t-\toff\t0\n\
zpool-docker/base1\t-\ton\t0\n\
zpool-docker/child1\tzpool-docker/base1@child1\toff\t268435456\n\
zpool-docker/moby\tzpool-docker/base1@139532156\toff\t0\n";

const SNAPSHOTS: &str = "zpool-docker/base1@child1\tchild1\n\
zpool-docker/base1@139532156\t-\n\
zpool-docker/base1@half\thalf\n\
zpool-docker/child1@stale\tgone\n";

const USAGE: &str = "used\t249856\navailable\t103498395648\nquota\t0\ncompression\toff\n";

const POOL: &str = "zpool-docker\tONLINE\t107374182400\t249856\t107373932544\n";

const HUMAN_POOL: &str = "rpool\tONLINE\t19.9G\t8.43G\t11.4G\n";

const MOUNTINFO: &str = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
29 1 0:25 / / rw,relatime shared:1 - zfs rpool/ROOT/ubuntu_ijuc69 rw,xattr,posixacl\n\
95 29 0:52 / /var/lib/berth rw,relatime shared:40 - zfs rpool/berth rw,xattr,posixacl\n\
96 95 0:53 / /var/lib/berth/tmp\\040dir rw shared:41 - tmpfs tmpfs rw\n";

fn argv(cmd: Cmd) -> String {
    cmd.argv.join(" ")
}

#[test]
fn every_command_line_is_exact() {
    assert_eq!(
        argv(list_layers("zpool-docker")),
        "zfs list -Hp -r -d 1 -t filesystem -o name,origin,readonly,quota zpool-docker"
    );
    assert_eq!(
        argv(list_snapshots("zpool-docker")),
        "zfs list -Hp -r -d 2 -t snapshot -o name,berth:child zpool-docker"
    );
    assert_eq!(argv(create("p/a", true, None)), "zfs create -o mountpoint=legacy p/a");
    assert_eq!(
        argv(create("p/a", false, Some(1 << 30))),
        "zfs create -o mountpoint=legacy -o readonly=on -o quota=1073741824 p/a"
    );
    assert_eq!(argv(snapshot("p/a@b", "b")), "zfs snapshot -o berth:child=b p/a@b");
    assert_eq!(argv(clone("p/a@b", "p/b", true, None)), "zfs clone -o mountpoint=legacy p/a@b p/b");
    assert_eq!(
        argv(clone("p/a@b", "p/b", false, Some(512))),
        "zfs clone -o mountpoint=legacy -o readonly=on -o quota=512 p/a@b p/b"
    );
    assert_eq!(argv(destroy_recursive("p/b")), "zfs destroy -r p/b");
    assert_eq!(argv(destroy("p/a@b")), "zfs destroy p/a@b");
    assert_eq!(argv(mount("p/b", Path::new("/r/graph/b"), true)), "mount -t zfs p/b /r/graph/b");
    assert_eq!(argv(mount("p/b", Path::new("/r/graph/b"), false)), "mount -t zfs -o ro p/b /r/graph/b");
    assert_eq!(argv(umount(Path::new("/r/graph/b"))), "umount /r/graph/b");
    assert_eq!(argv(dataset_usage("p")), "zfs get -Hp -o property,value used,available,quota,compression p");
    assert_eq!(argv(pool_list("p")), "zpool list -Hp -o name,health,size,allocated,free p");
}

#[test]
fn layers_come_back_from_the_dataset_listing() {
    let layers = parse_layers(LAYERS, "zpool-docker").unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers["base1"], Layer { parent: "".into(), read_write: false, quota: 0, origin: "".into() });
    assert_eq!(
        layers["child1"],
        Layer {
            parent: "base1".into(),
            read_write: true,
            quota: 268435456,
            origin: "zpool-docker/base1@child1".into()
        }
    );
    // A clone moby made: its origin is no berth snapshot, so no parent.
    assert_eq!(layers["moby"].parent, "");
    assert_eq!(layers["moby"].origin, "zpool-docker/base1@139532156");
}

#[test]
fn malformed_listings_are_typed_errors() {
    assert!(matches!(
        parse_layers("zpool-docker\t-\toff\n", "zpool-docker"),
        Err(ParseError::Fields { expected: 4, found: 3, .. })
    ));
    assert!(matches!(parse_layers("", "zpool-docker"), Err(ParseError::Missing(_))));
    let bad_ro = "zpool-docker\t-\toff\t0\nzpool-docker/a\t-\tmaybe\t0\n";
    assert_eq!(
        parse_layers(bad_ro, "zpool-docker"),
        Err(ParseError::Value { field: "readonly".into(), value: "maybe".into() })
    );
    let human = "zpool-docker\t-\toff\t0\nzpool-docker/a\t-\toff\t1.5G\n";
    let e = parse_layers(human, "zpool-docker").unwrap_err();
    assert_eq!(e, ParseError::Number { field: "quota".into(), value: "1.5G".into() });
    let err = e.into_error(&list_layers("zpool-docker"));
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("`zfs list -Hp") && err.message.contains("1.5G"), "{err}");
}

#[test]
fn debris_is_only_berth_snapshots_without_their_clone() {
    let layers = parse_layers(LAYERS, "zpool-docker").unwrap();
    let debris = debris_snapshots(SNAPSHOTS, &layers).unwrap();
    // child1's origin is kept; moby's unmarked snapshot is not ours;
    // `half` never got its clone; `gone`'s clone was destroyed.
    assert_eq!(debris, vec!["zpool-docker/base1@half", "zpool-docker/child1@stale"]);
    assert!(debris_snapshots("a@b\n", &layers).is_err());
}

#[test]
fn parents_come_only_from_berth_origins() {
    assert_eq!(parent_of("p/a@b", "p", "b").as_deref(), Some("a"));
    assert_eq!(parent_of("p/a@c", "p", "b"), None);
    assert_eq!(parent_of("q/a@b", "p", "b"), None);
    assert_eq!(parent_of("p/x/a@b", "p", "b"), None);
    assert_eq!(parent_of("", "p", "b"), None);
}

#[test]
fn usage_and_pool_figures_parse() {
    let u = parse_usage(USAGE).unwrap();
    assert_eq!(u, Usage { used: 249856, available: 103498395648, quota: 0, compression: "off".into() });
    assert_eq!(parse_usage("used\t1\n"), Err(ParseError::Missing("property available".into())));
    let p = parse_pool(POOL).unwrap();
    assert_eq!((p.name.as_str(), p.health.as_str(), p.size), ("zpool-docker", "ONLINE", 107374182400));
    assert_eq!((p.allocated, p.free), (249856, 107373932544));
    assert!(matches!(parse_pool(HUMAN_POOL), Err(ParseError::Number { .. })));
    assert!(matches!(parse_pool(&format!("{POOL}{POOL}")), Err(ParseError::Missing(_))));
    assert!(matches!(parse_pool("p\tSHINY\t1\t1\t0\n"), Err(ParseError::Value { .. })));
}

#[test]
fn the_dataset_under_a_path_comes_from_mountinfo() {
    let root = mount_of(MOUNTINFO, Path::new("/var/lib/berth/zfs")).unwrap();
    assert_eq!((root.fstype.as_str(), root.source.as_str()), ("zfs", "rpool/berth"));
    assert_eq!(mount_of(MOUNTINFO, Path::new("/etc")).unwrap().source, "rpool/ROOT/ubuntu_ijuc69");
    let tmp = mount_of(MOUNTINFO, Path::new("/var/lib/berth/tmp dir/x")).unwrap();
    assert_eq!((tmp.fstype.as_str(), tmp.mount_point), ("tmpfs", PathBuf::from("/var/lib/berth/tmp dir")));
    let ext3 = parse_mountinfo_line(MOUNTINFO.lines().next().unwrap()).unwrap();
    assert_eq!(
        ext3,
        MountEntry { mount_point: "/mnt2".into(), fstype: "ext3".into(), source: "/dev/root".into() }
    );
    assert_eq!(parse_mountinfo_line("garbage"), None);
    assert_eq!(unescape(r"a\040b\777\\x\04"), r"a b\777\\x\04", "only escapes of one byte are undone");
    assert_eq!(mount_of("", Path::new("/")), None);
}

fn failed(stderr: &str) -> Output {
    Output { code: Some(1), stdout: String::new(), stderr: stderr.into() }
}

#[test]
fn tool_messages_map_to_error_kinds() {
    let cases = [
        ("cannot create 'zpool-docker/base1': dataset already exists\n", ErrorKind::AlreadyExists),
        ("cannot open 'zpool-docker/nope': dataset does not exist\n", ErrorKind::NotFound),
        (
            "cannot destroy 'zpool-docker/base1': filesystem has children\n\
             use '-r' to destroy the following datasets:\nzpool-docker/base1@child1\n",
            ErrorKind::Conflict,
        ),
        (
            "cannot destroy 'zpool-docker/base1@child1': snapshot has dependent clones\n\
             use '-R' to destroy the following datasets:\nzpool-docker/child1\n",
            ErrorKind::Conflict,
        ),
        ("cannot destroy 'zpool-docker/a': dataset is busy\n", ErrorKind::Conflict),
        ("cannot create 'zpool-docker/a': out of space\n", ErrorKind::ResourceExhausted),
        ("cannot create 'zpool-docker/a': permission denied\n", ErrorKind::PermissionDenied),
        (
            "The ZFS modules are not loaded.\nTry running '/sbin/modprobe zfs' as root to load them.\n",
            ErrorKind::Unavailable,
        ),
        ("something new\n", ErrorKind::Internal),
    ];
    let cmd = create("zpool-docker/base1", true, None);
    for (stderr, kind) in cases {
        let e = failure(&cmd, &failed(stderr));
        assert_eq!(e.kind, kind, "{stderr}");
        assert!(e
            .message
            .starts_with("`zfs create -o mountpoint=legacy zpool-docker/base1` failed (exit 1): "));
        assert!(!e.message.contains('\n'), "{e}");
    }
    assert!(not_mounted(&failed("umount: /r/graph/x: not mounted.\n")));
    assert!(!not_mounted(&failed("umount: /r/graph/x: target is busy.\n")));
    let gone = not_run(&cmd, &std::io::Error::from(std::io::ErrorKind::NotFound));
    assert_eq!(gone.kind, ErrorKind::Unavailable);
    assert!(gone.message.contains("zfs is not installed"), "{gone}");
    let slow = not_run(&cmd, &std::io::Error::new(std::io::ErrorKind::TimedOut, "too slow"));
    assert_eq!(slow.kind, ErrorKind::Timeout);
}
