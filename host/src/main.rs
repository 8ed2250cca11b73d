fn main() -> std::process::ExitCode {
    ionflow::cli::main()
}
