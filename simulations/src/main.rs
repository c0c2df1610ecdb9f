//! Deterministic simulations of Chorus: membership at scale, partition placement and
//! overload, driven on the real state machines in simulated time.

fn main() {
    eprintln!("chorus-simulations: no scenario is available in this build");
    std::process::exit(2);
}
