//! Heap profiles through real HTTP: `/debug/pprof/heap` and `/debug/pprof/allocs`, read by
//! `go tool pprof`, drawn as flamegraphs and kept in `/profiles`. With obskit's
//! `heap-profiling` feature this binary runs on jemalloc with its profiler on (`main.rs`);
//! without it, the endpoints answer 501.

async fn get(addr: std::net::SocketAddr, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the server answers")
}

#[cfg(not(feature = "heap-profiling"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_heap_profiles_are_501() {
    use obskit::profile::ProfileStore;

    let server = crate::profiling::serve(ProfileStore::in_memory(16, 8 << 20)).await;
    for path in ["/debug/pprof/heap", "/debug/pprof/allocs"] {
        let response = get(server.addr, path).await;
        assert_eq!(response.status(), 501, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("heap-profiling"),
            "{body}"
        );
    }
}

#[cfg(feature = "heap-profiling")]
mod with_jemalloc {
    use std::hint::black_box;

    use obskit::profile::heap::{self, HeapView};
    use obskit::profile::ProfileStore;

    use super::get;
    use crate::profiling::{go_pprof_top, serve, temp_dir};

    /// 48 MiB held until the profile is taken, in a function of its own so that it is a frame.
    #[inline(never)]
    fn heap_test_hold_known_allocations() -> Vec<Vec<u8>> {
        (0..48).map(|i| black_box(vec![i as u8 + 1; 1 << 20])).collect()
    }

    /// 32 MiB allocated and freed at once: in `allocs`, never in `heap`.
    #[inline(never)]
    fn heap_test_churn_and_free() {
        for i in 0..32 {
            drop(black_box(vec![i as u8 + 1; 1 << 20]));
        }
    }

    /// A size as `go tool pprof` prints it (`49665.40kB`, `48.50MB`), in MiB.
    fn mebibytes(size: &str) -> Option<f64> {
        let split = size.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, unit) = size.split_at(split);
        let scale = match unit {
            "B" => 1.0,
            "kB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        Some(number.parse::<f64>().ok()? * scale / (1024.0 * 1024.0))
    }

    fn svg_text(svg: &[u8]) -> String {
        let text = String::from_utf8(svg.to_vec()).expect("the flamegraph is UTF-8");
        assert!(text.starts_with("<?xml"), "{}", &text[..text.len().min(200)]);
        text
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn go_tool_pprof_names_the_allocating_function() {
        assert!(heap::sampling(), "the test binary starts jemalloc's profiler");
        assert_eq!(heap::sample_interval(), Some(heap::DEFAULT_INTERVAL_BYTES));
        let store = ProfileStore::in_memory(16, 16 << 20);
        let server = serve(store.clone()).await;
        let held = heap_test_hold_known_allocations();
        heap_test_churn_and_free();

        // In use: the held 48 MiB, named, and the freed work absent.
        let response = get(server.addr, "/debug/pprof/heap").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/octet-stream");
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            disposition.starts_with("attachment; filename=\"heap-"),
            "{disposition}"
        );
        let pprof = response.bytes().await.unwrap();
        let dir = temp_dir("heap");
        let file = dir.join("heap.pb");
        std::fs::write(&file, &pprof).unwrap();
        let top = go_pprof_top(&file);
        assert!(
            top.contains("Type: inuse_space"),
            "in-use bytes by default:\n{top}"
        );
        let line = top
            .lines()
            .find(|l| l.contains("heap_test_hold_known_allocations"))
            .unwrap_or_else(|| panic!("go tool pprof names the allocating function:\n{top}"));
        // Its cumulative bytes: the estimate of what it holds, within the sampling's error.
        let cum = line.split_whitespace().nth(3).unwrap_or_default();
        let mib = mebibytes(cum).unwrap_or_else(|| panic!("a cumulative size: {line}"));
        assert!(
            (40.0..60.0).contains(&mib),
            "48 MiB held, {mib:.1} MiB estimated: {line}"
        );

        let svg = get(server.addr, "/debug/pprof/heap?format=svg").await;
        assert_eq!(svg.status(), 200);
        assert_eq!(svg.headers()["content-type"], "image/svg+xml");
        let svg = svg_text(&svg.bytes().await.unwrap());
        assert!(svg.contains("heap_test_hold_known_allocations"));
        assert!(
            !svg.contains("heap_test_churn_and_free"),
            "freed memory is not in use"
        );
        assert!(!svg.contains("_rjem_"), "jemalloc's own frames are trimmed");

        // Allocated since start: the freed work too, by its allocated bytes.
        let allocs = get(server.addr, "/debug/pprof/allocs").await;
        assert_eq!(allocs.status(), 200);
        let file = dir.join("allocs.pb");
        std::fs::write(&file, allocs.bytes().await.unwrap()).unwrap();
        let top = go_pprof_top(&file);
        assert!(top.contains("Type: alloc_space"), "{top}");
        assert!(top.contains("heap_test_churn_and_free"), "{top}");
        let svg = get(server.addr, "/debug/pprof/allocs?format=svg").await;
        assert!(svg_text(&svg.bytes().await.unwrap()).contains("heap_test_churn_and_free"));
        drop(black_box(held));

        // Kept in /profiles like CPU captures, each both ways.
        let listed: serde_json::Value = get(server.addr, "/profiles").await.json().await.unwrap();
        let heap_files: Vec<&serde_json::Value> = listed["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["profile_type"] == "heap")
            .collect();
        assert_eq!(heap_files.len(), 8, "{listed}");
        for file in &heap_files {
            assert_eq!(file["sample_interval_bytes"], heap::DEFAULT_INTERVAL_BYTES);
            assert!(["heap", "allocs"].contains(&file["function"].as_str().unwrap()));
            let url = file["download_url"].as_str().unwrap();
            assert_eq!(get(server.addr, url).await.status(), 200, "{url}");
        }

        // Heap profiles are dumps, not queries: HEAD takes none, a bad format is refused.
        let head = reqwest::Client::new()
            .head(format!("http://{}/debug/pprof/heap", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 405);
        let bad = get(server.addr, "/debug/pprof/heap?format=png").await;
        assert_eq!(bad.status(), 400);
        let _ = std::fs::remove_dir_all(&dir);

        // The interval is a power of two, changed at run time; 0 stops sampling.
        heap::set_sample_interval(3 << 20).unwrap();
        assert_eq!(heap::sample_interval(), Some(2 << 20));
        heap::set_sample_interval(0).unwrap();
        assert!(!heap::sampling());
        heap::set_sample_interval(heap::DEFAULT_INTERVAL_BYTES).unwrap();
        assert!(heap::sampling());
        assert!(heap::dump(HeapView::InUse).is_ok());
    }
}
