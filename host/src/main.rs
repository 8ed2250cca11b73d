/// jq transforms and JSON records allocate and free small values at a high
/// rate; glibc's malloc spent 35-40% of a file pipeline's CPU on them
/// (BENCHMARKS.md, P4), mimalloc a fraction of that. `Tracking` charges an
/// evaluation's allocations to its memory budget (`sandbox::alloc`).
#[global_allocator]
static ALLOCATOR: ionflow::sandbox::alloc::Tracking<mimalloc::MiMalloc> =
    ionflow::sandbox::alloc::Tracking(mimalloc::MiMalloc);

fn main() -> std::process::ExitCode {
    ionflow::cli::main()
}
