//! The telematicsctl entry point, built inside the e2e test package (doctor tests).

fn main() -> std::process::ExitCode {
    telematicsctl::main_entry()
}
