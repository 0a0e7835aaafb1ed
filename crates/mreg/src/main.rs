//! The `mreg` binary: everything lives in the library; see `mreg --help`.

fn main() -> std::process::ExitCode {
    mreg::cli::run()
}
