//! `saslgated`: the saslauthd drop-in (see `saslgate::daemon`).

fn main() {
    std::process::exit(saslgate::daemon::main_with_args(
        std::env::args_os().collect(),
    ));
}
