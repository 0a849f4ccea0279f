//! The `ghmesh` binary: see `ghmesh --help`.

fn main() -> std::process::ExitCode {
    ghmesh_node::cli::main()
}
