fn main() {
    std::process::exit(saslgate::cli::main());
}
