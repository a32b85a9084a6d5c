//! `shop`: runs the whole shop (the four services and a gateway) until Ctrl-C.
//! `shop serve <backend|cart|order|user>` runs one service in the foreground (what the launcher
//! starts as its children).

// jemalloc with its heap profiler on, for every service the shop runs (`shop serve NAME` is
// this binary too): `/debug/pprof/heap` and `/debug/pprof/allocs` on each admin surface. The
// services' own binaries keep the system allocator (the user service tunes glibc's for its
// password hashes, see user's allocator.rs).
obskit::heap_profiling_allocator!();

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", name] => shop::serve_service(name).await,
        [] => match shop::launcher::Plan::from_lookup(&|name| std::env::var(name).ok()) {
            Ok(plan) => shop::launcher::run(plan).await,
            Err(e) => Err(e),
        },
        _ => Err("usage: shop            run the whole shop\n       shop serve NAME run one service (backend, cart, order, user)".into()),
    };
    if let Err(e) = result {
        eprintln!("shop: {e}");
        std::process::exit(1);
    }
}
