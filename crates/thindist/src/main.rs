fn main() {
    eprintln!("thindist: under construction");
    std::process::exit(2);
}
