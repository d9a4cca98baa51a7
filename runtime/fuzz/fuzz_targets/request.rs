//! Any bytes as one request frame: the dispatcher must answer or refuse, never panic, hang or
//! allocate without bound. Run with `cargo fuzz run request` (see runtime/fuzz/README.md).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sluice::broker::config::Defaults;
use sluice::broker::{Broker, BrokerConfig};

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

struct World {
    _dir: tempfile::TempDir,
    broker: Arc<Broker>,
    rt: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::open(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: 1,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: true,
            default_partitions: 2,
            defaults: Defaults::default(),
            retention_check_ms: 1000,
            groups: Default::default(),
        })
        .expect("broker");
        World {
            _dir: dir,
            broker: Arc::new(broker),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    // Paused time: a long-polling fetch completes at once instead of waiting.
    let _ = w
        .rt
        .block_on(sluice::protocol::handle(&w.broker, "fuzz", bytes::Bytes::copy_from_slice(data)));
});
