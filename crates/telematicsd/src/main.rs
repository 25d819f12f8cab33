//! The telematics daemon binary.

fn main() -> std::process::ExitCode {
    telematicsd::cli::main_entry()
}
