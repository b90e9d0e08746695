fn main() -> std::process::ExitCode {
    pytie::cli::main()
}
