//! Owner / back-end / dealer tool for telematicsd (see the library for everything).

fn main() -> std::process::ExitCode {
    telematicsctl::main_entry()
}
