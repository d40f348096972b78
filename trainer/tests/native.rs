//! The native shim does real work: autocast dtype and c10d TCPStore.

use std::time::Duration;

use imagen_trainer::autocast::{autocast_dtype, autocast_enabled, set_autocast_dtype};
use imagen_trainer::autocast::{Autocast, AutocastDevice};
use imagen_trainer::dist::{StoreOptions, TcpStore};
use tch::{Kind, Tensor};

#[test]
fn cuda_autocast_dtype_is_settable_to_bf16() {
    // Autocast state is thread-local in libtorch; each test runs on its own thread.
    assert_eq!(autocast_dtype(AutocastDevice::Cuda).unwrap(), Kind::Half, "libtorch default");
    set_autocast_dtype(AutocastDevice::Cuda, Kind::BFloat16).unwrap();
    assert_eq!(autocast_dtype(AutocastDevice::Cuda).unwrap(), Kind::BFloat16);
    set_autocast_dtype(AutocastDevice::Cuda, Kind::Half).unwrap();
    assert_eq!(autocast_dtype(AutocastDevice::Cuda).unwrap(), Kind::Half);
    assert!(set_autocast_dtype(AutocastDevice::Cuda, Kind::Int64).is_err());
}

#[test]
fn autocast_region_computes_in_bf16_and_restores() {
    // The same mechanism as CUDA autocast, exercised with real CPU kernels.
    let a = Tensor::randn([4, 8], (Kind::Float, tch::Device::Cpu));
    let b = Tensor::randn([8, 3], (Kind::Float, tch::Device::Cpu));
    let before = autocast_dtype(AutocastDevice::Cpu).unwrap();
    {
        let _region = Autocast::enter(AutocastDevice::Cpu, Kind::BFloat16).unwrap();
        assert!(autocast_enabled(AutocastDevice::Cpu).unwrap());
        let c = a.matmul(&b);
        assert_eq!(c.kind(), Kind::BFloat16, "matmul under bf16 autocast");
        let expected = a.to_kind(Kind::BFloat16).matmul(&b.to_kind(Kind::BFloat16));
        assert!(c.allclose(&expected, 1e-2, 1e-2, false));
    }
    assert!(!autocast_enabled(AutocastDevice::Cpu).unwrap());
    assert_eq!(autocast_dtype(AutocastDevice::Cpu).unwrap(), before);
    assert_eq!(a.matmul(&b).kind(), Kind::Float, "outside the region");
}

#[test]
fn tcp_store_round_trip_on_loopback() {
    let server = TcpStore::open(&StoreOptions::server("127.0.0.1", 0)).unwrap();
    let port = server.port();
    assert_ne!(port, 0);
    let client =
        TcpStore::open(&StoreOptions::client("127.0.0.1", port).timeout(Duration::from_secs(10)))
            .unwrap();
    let payload: Vec<u8> = (0..=255).collect();
    client.set("rank0/addr", &payload).unwrap();
    assert_eq!(server.get("rank0/addr").unwrap(), payload);
    server.set("empty", &[]).unwrap();
    assert_eq!(client.get("empty").unwrap(), Vec::<u8>::new());
    assert_eq!(client.add("counter", 2).unwrap(), 2);
    assert_eq!(server.add("counter", 3).unwrap(), 5);
    assert!(client.contains("counter").unwrap());
    assert!(!client.contains("never-set").unwrap());
}

#[test]
fn tcp_store_get_of_missing_key_times_out_with_error() {
    let server =
        TcpStore::open(&StoreOptions::server("127.0.0.1", 0).timeout(Duration::from_millis(300)))
            .unwrap();
    let err = server.get("never-set").unwrap_err().to_string();
    assert!(err.contains("never-set"), "{err}");
}

#[test]
fn tcp_store_client_without_server_fails_in_bounded_time() {
    // Take a free port, then close it, so nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = std::time::Instant::now();
    let opts = StoreOptions::client("127.0.0.1", port).timeout(Duration::from_millis(500));
    let err = TcpStore::open(&opts).err().expect("no server is listening").to_string();
    assert!(err.contains(&port.to_string()), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn cuda_memory_stats_report_a_missing_device_as_an_error() {
    // On a machine without a GPU the call must fail cleanly, not crash.
    if tch::Cuda::is_available() {
        let before = imagen_trainer::native::cuda_memory(0).unwrap();
        let t = Tensor::zeros([1 << 20], (Kind::Float, tch::Device::Cuda(0)));
        let after = imagen_trainer::native::cuda_memory(0).unwrap();
        assert!(after.allocated >= before.allocated + 4 * (1 << 20));
        drop(t);
    } else {
        let err = imagen_trainer::native::cuda_memory(0).unwrap_err().to_string();
        assert!(err.contains("CUDA"), "{err}");
    }
}
