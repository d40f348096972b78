//! The launcher's own signal handling, on workers that ignore SIGTERM (a shell), in a test binary
//! of its own because the launcher installs handlers for this process's SIGINT and SIGTERM: the
//! first signal is forwarded and waited on, a repeat within two seconds is the same request, and
//! a second one later kills the workers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imagen_trainer::launch::{launch, LaunchOptions};

#[test]
fn a_second_signal_kills_workers_that_ignore_the_first() {
    let marker = tempfile::tempdir().unwrap();
    let script = format!("trap '' TERM INT; touch {}/$RANK; sleep 60", marker.path().display());
    let opts = LaunchOptions {
        nproc_per_node: 2,
        nnodes: 1,
        node_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: 1,
        grace: Duration::from_secs(1),
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script],
    };
    let start = Instant::now();
    let launcher = std::thread::spawn(move || launch(&opts));
    while !(marker.path().join("0").exists() && marker.path().join("1").exists()) {
        assert!(start.elapsed() < Duration::from_secs(30), "the workers did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: raise(3) delivers SIGTERM to this process, whose handlers the launcher installed.
    unsafe { libc::raise(libc::SIGTERM) };
    // The same signal again a moment later (a wrapper forwarding what the terminal also sent) is
    // the same request, not a second one.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGTERM) };
    // The workers ignore it, and a forwarded signal sets no deadline (a save may take minutes):
    // the launcher waits, well past its one-second grace.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!launcher.is_finished(), "the launcher gave up on workers after one signal");
    let second = Instant::now();
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGTERM) };
    while !launcher.is_finished() {
        assert!(second.elapsed() < Duration::from_secs(10), "a second signal did not stop the job");
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = launcher.join().unwrap().unwrap();
    assert_ne!(code, 0, "killed workers are a failure");
}
