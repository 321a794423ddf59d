//! Put and get one large file through the `storage-s3` plugin (loaded from its library, as
//! ferry does) and through object_store called directly in-process, against the same server.
//! Used by `bench/s3-bench.sh`; reads the server from the FERRY_TEST_S3_* variables.
//!
//! ```sh
//! cargo run --release -p storage-s3 --example throughput -- SIZE_MIB ROUNDS
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use test_support::{open_plugin_store, s3_settings, server_env, unique_prefix};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mib: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(200);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let size = size_mib * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    {
        let mut file = std::fs::File::create(&source).unwrap();
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            for byte in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            file.write_all(&chunk).unwrap();
        }
    }
    let prefix = unique_prefix("throughput");
    let mb = size as f64 / 1e6;

    // Through the plugin, across the stable ABI.
    let store = open_plugin_store("storage-s3", s3_settings(&prefix)).unwrap();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let key = format!("plugin-{round}.bin");
        let start = Instant::now();
        store.put_file(&key, &source).unwrap();
        up.push(mb / start.elapsed().as_secs_f64());
        let start = Instant::now();
        store
            .get_file(&key, &dir.path().join("plugin-get.bin"))
            .unwrap();
        down.push(mb / start.elapsed().as_secs_f64());
        store.delete(&key).unwrap();
    }
    println!("plugin put {:.0} MB/s", median(up));
    println!("plugin get {:.0} MB/s", median(down));

    // object_store directly, same part size and concurrency as the plugin.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let direct: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(server_env("FERRY_TEST_S3_BUCKET"))
            .with_endpoint(server_env("FERRY_TEST_S3_ENDPOINT"))
            .with_region(server_env("FERRY_TEST_S3_REGION"))
            .with_access_key_id(server_env("FERRY_TEST_S3_ACCESS_KEY_ID"))
            .with_secret_access_key(server_env("FERRY_TEST_S3_SECRET_ACCESS_KEY"))
            .with_allow_http(true)
            .build()
            .unwrap(),
    );
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let location = ObjectPath::from(format!("{prefix}/direct-{round}.bin"));
        let start = Instant::now();
        runtime.block_on(async {
            let upload = direct.put_multipart(&location).await.unwrap();
            let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
            let mut file = std::fs::File::open(&source).unwrap();
            let mut buffer = vec![0u8; 8 * 1024 * 1024];
            loop {
                let read = std::io::Read::read(&mut file, &mut buffer).unwrap();
                if read == 0 {
                    break;
                }
                writer.wait_for_capacity(8).await.unwrap();
                writer.write(&buffer[..read]);
            }
            writer.finish().await.unwrap();
        });
        up.push(mb / start.elapsed().as_secs_f64());
        let start = Instant::now();
        runtime.block_on(async {
            use futures::TryStreamExt;
            let mut out = std::fs::File::create(dir.path().join("direct-get.bin")).unwrap();
            let mut stream = direct.get(&location).await.unwrap().into_stream();
            while let Some(chunk) = stream.try_next().await.unwrap() {
                out.write_all(&chunk).unwrap();
            }
        });
        down.push(mb / start.elapsed().as_secs_f64());
        runtime.block_on(direct.delete(&location)).unwrap();
    }
    println!("direct put {:.0} MB/s", median(up));
    println!("direct get {:.0} MB/s", median(down));
    println!("source {}", source.display());
    // Keep the file for the boto3 comparison when asked to.
    if std::env::var_os("KEEP_SOURCE").is_some() {
        std::mem::forget(dir);
    }
}
