//! `titan-step`: see the library's documentation and `titan-step --help`.

fn main() {
    std::process::exit(titan_step::cli::main(std::env::args_os().skip(1).collect()));
}
