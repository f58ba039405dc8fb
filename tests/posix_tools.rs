//! POSIX that common tools need, through a real mount: hard links (`ln`,
//! `cp -al`), fifos and sockets, devices refused with a clean errno,
//! ctime on link and unlink, and `--allow-other` with permissions checked
//! by mode and owner for another local user.

mod common;

use common::{NodeGuard, NodeOpts, addr, blocking, tool};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BLOCK: u8 = 124;
const IO: Duration = Duration::from_secs(60);

/// Runs a tool that may fail (with a deadline); its output.
async fn try_run(mut cmd: Command) -> std::process::Output {
    let what = format!("{cmd:?}");
    blocking(&what, IO + Duration::from_secs(5), move || {
        common::run_tool(&mut cmd, IO)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn run(cmd: &mut Command) -> std::process::Output {
    tool(cmd, IO).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_fifos_sockets_and_other_users() {
    let idir = tempfile::Builder::new()
        .prefix("peerstore-id-")
        .tempdir()
        .unwrap();
    let mut opts = NodeOpts::mounted(&addr(BLOCK, 1), None, &idir.path().join("identity"));
    opts.replicas = 1;
    opts.extra.push("--allow-other".into());
    let node = NodeGuard::start(opts).await;
    let mnt = node.mount_dir().to_path_buf();
    let line = common::mount_line(&mnt).expect("mounted");
    assert!(line.contains("allow_other"), "mount options: {line}");

    // A tree, hard-linked by cp -al.
    let m = mnt.clone();
    blocking("make a tree", IO, move || {
        fs::create_dir_all(m.join("src/sub")).unwrap();
        fs::write(m.join("src/a.txt"), b"first version").unwrap();
        fs::write(m.join("src/sub/b.bin"), vec![7u8; 50_000]).unwrap();
    })
    .await;
    let out = run(Command::new("cp")
        .arg("-al")
        .arg(mnt.join("src"))
        .arg(mnt.join("dst")))
    .await;
    assert!(out.status.success(), "cp -al: {}", common::stderr(&out));
    let m = mnt.clone();
    blocking("check links", IO, move || {
        let a = fs::metadata(m.join("src/a.txt")).unwrap();
        let a2 = fs::metadata(m.join("dst/a.txt")).unwrap();
        assert_eq!(a.ino(), a2.ino(), "one object, one inode");
        assert_eq!(a2.nlink(), 2);
        assert_eq!(
            fs::read(m.join("dst/sub/b.bin")).unwrap(),
            vec![7u8; 50_000]
        );
        // A write through one name shows through the other.
        fs::write(m.join("dst/a.txt"), b"second version").unwrap();
        assert_eq!(fs::read(m.join("src/a.txt")).unwrap(), b"second version");
        // Removing one name keeps the other, and its count drops.
        fs::remove_file(m.join("src/a.txt")).unwrap();
        let after = fs::metadata(m.join("dst/a.txt")).unwrap();
        assert_eq!(after.nlink(), 1);
        assert_eq!(fs::read(m.join("dst/a.txt")).unwrap(), b"second version");
        // ln changes the count and the ctime; a directory cannot be linked.
        let ctime = |md: &fs::Metadata| (md.ctime(), md.ctime_nsec());
        std::thread::sleep(Duration::from_millis(20));
        fs::hard_link(m.join("dst/a.txt"), m.join("dst/a-again")).unwrap();
        let linked = fs::metadata(m.join("dst/a-again")).unwrap();
        assert_eq!(linked.nlink(), 2);
        assert!(ctime(&linked) > ctime(&after), "ln updates ctime");
        let e = fs::hard_link(m.join("dst/sub"), m.join("dst/sub-link")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    })
    .await;

    // Fifos and sockets; device nodes are refused.
    let out = run(Command::new("mkfifo").arg(mnt.join("pipe"))).await;
    assert!(out.status.success(), "mkfifo: {}", common::stderr(&out));
    let sock = mnt.join("sock");
    let out = run(Command::new("python3").arg("-c").arg(format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.bind({:?})",
        sock.display().to_string()
    )))
    .await;
    assert!(out.status.success(), "bind: {}", common::stderr(&out));
    let mut mknod = Command::new("mknod");
    mknod.arg(mnt.join("dev")).args(["c", "1", "3"]);
    let out = try_run(mknod).await;
    assert!(!out.status.success(), "a device node was made");
    assert!(
        common::stderr(&out).contains("not supported"),
        "mknod: {}",
        common::stderr(&out)
    );
    let m = mnt.clone();
    blocking("special files", IO, move || {
        assert!(
            fs::symlink_metadata(m.join("pipe"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(
            fs::symlink_metadata(m.join("sock"))
                .unwrap()
                .file_type()
                .is_socket()
        );
        assert!(!m.join("dev").exists());
    })
    .await;

    // Another local user: the kernel checks modes and owners.
    let parent = mnt.parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    let m = mnt.clone();
    blocking("modes", IO, move || {
        fs::write(m.join("public.txt"), b"for everyone").unwrap();
        fs::set_permissions(m.join("public.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(m.join("private.txt"), b"for root").unwrap();
        fs::set_permissions(m.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    })
    .await;
    let as_nobody = |p: &Path| {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "cat"]).arg(p);
        c
    };
    let out = try_run(as_nobody(&mnt.join("public.txt"))).await;
    assert!(
        out.status.success(),
        "nobody reads a 0644 file: {}",
        common::stderr(&out)
    );
    assert_eq!(out.stdout, b"for everyone");
    let out = try_run(as_nobody(&mnt.join("private.txt"))).await;
    assert!(!out.status.success(), "nobody read a 0600 file of root's");
    assert!(common::stderr(&out).contains("Permission denied"));
    drop(node);
}
