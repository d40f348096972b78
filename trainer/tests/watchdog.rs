//! The distributed watchdog over a real c10d TCPStore in this process: a rank that goes quiet is
//! named and every rank is told, an abort carries its rank's reason, a finished rank is left in
//! peace, and a store that goes away (rank 0 exited) is noticed.

use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use imagen_trainer::dist::{OnFatal, StoreOptions, TcpStore, Watchdog, WatchdogOptions};

fn server() -> TcpStore {
    TcpStore::open(&StoreOptions::server("127.0.0.1", 0).timeout(Duration::from_secs(10))).unwrap()
}

fn options(timeout_ms: u64) -> WatchdogOptions {
    WatchdogOptions {
        timeout: Duration::from_millis(timeout_ms),
        interval: Duration::from_millis(50),
    }
}

/// A fatal handler that reports instead of ending the test process.
fn reporter() -> (OnFatal, Receiver<String>) {
    let (tx, rx) = channel();
    (Box::new(move |why| tx.send(why).unwrap()), rx)
}

fn start(
    store: &TcpStore,
    rank: usize,
    world: usize,
    timeout_ms: u64,
) -> (Watchdog, Receiver<String>) {
    let (on_fatal, rx) = reporter();
    let dog =
        Watchdog::start("127.0.0.1", store.port(), "", rank, world, options(timeout_ms), on_fatal);
    (dog.unwrap(), rx)
}

#[test]
fn a_rank_that_goes_quiet_is_named_and_every_rank_is_told() {
    let store = server();
    let (_zero, zero_rx) = start(&store, 0, 3, 600);
    let (one, one_rx) = start(&store, 1, 3, 600);
    // Rank 2 checks in once (as a started watchdog does) and is never heard from again.
    store.add("watchdog/beat/2", 1).unwrap();
    let began = Instant::now();
    let why = zero_rx.recv_timeout(Duration::from_secs(10)).expect("rank 0 did not notice");
    assert!(began.elapsed() >= Duration::from_millis(500), "too early: {:?}", began.elapsed());
    assert!(why.contains("rank 2 has not been heard from"), "{why}");
    // Rank 0 hosts the store: it ends only once rank 1 has read the abort, or rank 1 would find
    // the store gone and blame rank 0 instead of rank 2.
    assert!(store.contains("watchdog/ack/1").unwrap(), "rank 0 ended before rank 1 was told");
    let told = one_rx.recv_timeout(Duration::from_secs(10)).expect("rank 1 was not told");
    assert!(told.contains("rank 2 has not been heard from"), "{told}");
    drop(one);
}

#[test]
fn an_abort_carries_its_ranks_reason_to_the_others() {
    let store = server();
    let (_zero, zero_rx) = start(&store, 0, 2, 60_000);
    let (mut one, one_rx) = start(&store, 1, 2, 60_000);
    let began = Instant::now();
    one.abort("No space left on device (os error 28) writing step-000000100");
    let why = zero_rx.recv_timeout(Duration::from_secs(10)).expect("rank 0 was not told");
    assert!(why.starts_with("rank 1 failed: No space left on device"), "{why}");
    // Without waiting for the rank that posted it to read its own abort.
    assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
    // The rank that posted the abort does not act on it itself.
    assert!(one_rx.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn finished_ranks_are_not_taken_for_dead_ones() {
    let store = server();
    let (zero, zero_rx) = start(&store, 0, 2, 300);
    let (one, one_rx) = start(&store, 1, 2, 300);
    one.finish().unwrap();
    std::thread::sleep(Duration::from_millis(900));
    assert!(zero_rx.try_recv().is_err(), "rank 0 flagged a rank that had finished");
    zero.finish().unwrap();
    assert!(one_rx.try_recv().is_err());
}

#[test]
fn a_rank_that_leaves_without_finishing_stops_the_others() {
    let store = server();
    let (_zero, zero_rx) = start(&store, 0, 2, 60_000);
    let (one, _one_rx) = start(&store, 1, 2, 60_000);
    drop(one);
    let why = zero_rx.recv_timeout(Duration::from_secs(10)).expect("rank 0 was not told");
    assert!(why.contains("rank 1 failed: it stopped before the end of its run"), "{why}");
}

#[test]
fn a_store_that_goes_away_is_noticed() {
    let store = server();
    let (_one, one_rx) = start(&store, 1, 2, 60_000);
    drop(store);
    let why = one_rx.recv_timeout(Duration::from_secs(30)).expect("the lost store went unnoticed");
    assert!(why.contains("stopped answering"), "{why}");
}

#[test]
fn a_restarted_attempt_under_its_own_key_prefix_ignores_the_last_attempts_abort() {
    // torchrun's agent store outlives a restart: attempt 0 left its abort behind.
    let store = server();
    let stale = TcpStore::open(
        &StoreOptions::client("127.0.0.1", store.port()).key_prefix("/worker/attempt_0/"),
    )
    .unwrap();
    stale.add("watchdog/abort-claim", 1).unwrap();
    stale.set("watchdog/abort", b"rank 1 failed: attempt 0's error").unwrap();
    assert!(
        store.contains("/worker/attempt_0/watchdog/abort").unwrap(),
        "keys go behind the prefix"
    );
    let dog = |prefix: &str, rank: usize| {
        let (on_fatal, rx) = reporter();
        let port = store.port();
        (
            Watchdog::start("127.0.0.1", port, prefix, rank, 2, options(60_000), on_fatal).unwrap(),
            rx,
        )
    };
    let (zero, zero_rx) = dog("/worker/attempt_1/", 0);
    let (one, one_rx) = dog("/worker/attempt_1/", 1);
    std::thread::sleep(Duration::from_millis(400));
    assert!(zero_rx.try_recv().is_err() && one_rx.try_recv().is_err(), "a stale abort was read");
    one.finish().unwrap();
    zero.finish().unwrap();
    // Under attempt 0's prefix the same abort is read at once.
    let (_late, late_rx) = dog("/worker/attempt_0/", 0);
    let why = late_rx.recv_timeout(Duration::from_secs(10)).expect("the abort was not seen");
    assert!(why.contains("attempt 0's error"), "{why}");
}

#[test]
fn rank_zero_waiting_for_the_others_to_finish_stops_at_an_abort() {
    let store = server();
    let (zero, _zero_rx) = start(&store, 0, 2, 60_000);
    let (mut one, _one_rx) = start(&store, 1, 2, 60_000);
    // Rank 1 fails after the last collective, while rank 0 waits for it to say it finished.
    let failing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        one.abort("No space left on device");
    });
    let began = Instant::now();
    zero.finish().unwrap();
    assert!(began.elapsed() < Duration::from_secs(10), "waited {:?}", began.elapsed());
    failing.join().unwrap();
}
