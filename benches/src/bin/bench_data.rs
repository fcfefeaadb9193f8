//! The data set `benches/run.sh` loads into the realistic upstream (`tests/fhir-server`):
//! the sample ~1 KB Patient `bench-1`, the Practitioner its Observations name, and N
//! generated Observations of it (`assent_benches::observation`), as one JSON array.
//! Usage: `bench_data N > data.json`.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    println!("{}", assent_benches::realistic_data(n));
}
