//! The `mreg` binary: everything lives in the library; see `mreg --help`.

/// mimalloc rather than the system allocator: the gateway allocates on one worker thread and
/// frees on another all the time (request and response buffers), and glibc's arena locks then
/// make the workers wait on each other (`cargo bench --bench gateway` measures it). The
/// benchmarks declare the same allocator, so that they measure what this binary runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mreg::cli::run()
}
