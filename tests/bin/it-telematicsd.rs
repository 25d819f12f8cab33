//! The daemon entry point, built inside the e2e test package.

fn main() -> std::process::ExitCode {
    telematicsd::cli::main_entry()
}
