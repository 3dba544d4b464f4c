//! Times one keyswitch and one programmable bootstrap (one thread each) for a spread of
//! parameter-set shapes and one leveled multiply-add, fits the optimizer's cost model to
//! them, and prints the fit next to the committed one (`fhe_nn::params::cost::FITTED`).
//!
//!     cargo run --release -p fhe-nn --example cost_model -- [--repeats N] [--json FILE]

use std::time::Instant;

use fhe_nn::fhe::bootstrap::bootstrap;
use fhe_nn::params::cost::{fit, Timing, FITTED};
use fhe_nn::params::{vetted, ParameterSet, Shape};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::{keyswitch_lwe_ciphertext, CiphertextModulus, LweCiphertext};
use tfhe::shortint::atomic_pattern::AtomicPatternServerKey;
use tfhe::shortint::{self, server_key::LookupTableOwned};

fn shape(n: usize, k: usize, big_n: usize, pbs: (usize, usize), ks: (usize, usize)) -> Shape {
    Shape {
        lwe_dimension: n,
        glwe_dimension: k,
        polynomial_size: big_n,
        pbs,
        ks,
    }
}

/// Median seconds of `f` over `repeats` runs (after one warm-up run).
fn median_seconds(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Median seconds of one keyswitch and of one bootstrap with `set`, over `repeats` runs each.
fn time_set(set: &ParameterSet, repeats: usize) -> Result<Timing, String> {
    let client = shortint::ClientKey::new(*set.params());
    let server = shortint::ServerKey::new(&client);
    let big = client.encrypt(1);
    let lut: LookupTableOwned = server.generate_lookup_table(|x| x);
    let AtomicPatternServerKey::Standard(standard) = &server.atomic_pattern else {
        return Err("not a standard KS-PBS key".into());
    };
    let ksk = &standard.key_switching_key;
    let mut small = LweCiphertext::new(
        0u64,
        ksk.output_key_lwe_dimension().to_lwe_size(),
        CiphertextModulus::new_native(),
    );
    let keyswitch = median_seconds(repeats, || {
        keyswitch_lwe_ciphertext(ksk, &big.ct, &mut small)
    });
    let bootstrap = median_seconds(repeats, || {
        std::hint::black_box(bootstrap(&server, &small, &lut).expect("a classic key"));
    });
    Ok(Timing {
        shape: set.shape(),
        keyswitch,
        bootstrap,
    })
}

/// Seconds per word of a leveled multiply-add.
fn time_multiply_add() -> f64 {
    let words = 2049;
    let x: Vec<u64> = (0..words as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9))
        .collect();
    let mut acc = vec![0u64; words];
    let reps = 200_000;
    let start = Instant::now();
    for r in 0..reps {
        slice_wrapping_add_scalar_mul_assign(&mut acc, &x, r as u64);
    }
    let t = start.elapsed().as_secs_f64();
    std::hint::black_box(&acc);
    t / (reps * words) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut repeats = 15;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeats" => repeats = args.next().ok_or("--repeats N")?.parse()?,
            "--json" => json = Some(args.next().ok_or("--json FILE")?),
            "-h" | "--help" => {
                println!("usage: cost_model [--repeats N] [--json FILE]");
                return Ok(());
            }
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()?;
    let mut sets: Vec<ParameterSet> = [2, 3, 4, 5, 6].into_iter().filter_map(vetted).collect();
    for s in [
        shape(640, 1, 1024, (23, 1), (2, 7)),
        shape(720, 1, 2048, (23, 1), (3, 4)),
        shape(800, 1, 2048, (23, 1), (4, 4)),
        shape(760, 1, 2048, (15, 2), (2, 8)),
        shape(880, 2, 1024, (23, 1), (5, 3)),
        shape(850, 1, 4096, (23, 1), (3, 5)),
        shape(832, 1, 4096, (15, 2), (4, 4)),
        shape(1000, 1, 4096, (15, 2), (7, 2)),
    ] {
        sets.push(ParameterSet::custom(s, 4));
    }
    let mut timings = Vec::new();
    println!("| set | n | k | N | pbs | ks | keyswitch ms | bootstrap ms | committed model ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for set in &sets {
        let t = time_set(set, repeats)?;
        let s = t.shape;
        println!(
            "| {} | {} | {} | {} | 2^{}×{} | 2^{}×{} | {:.2} | {:.2} | {:.2} + {:.2} |",
            set.name(),
            s.lwe_dimension,
            s.glwe_dimension,
            s.polynomial_size,
            s.pbs.0,
            s.pbs.1,
            s.ks.0,
            s.ks.1,
            1e3 * t.keyswitch,
            1e3 * t.bootstrap,
            1e3 * FITTED.keyswitch_seconds(&s),
            1e3 * FITTED.bootstrap_seconds(&s),
        );
        timings.push(t);
    }
    let mac = time_multiply_add();
    let fitted = fit(&timings, mac);
    println!("\nfit: {fitted:?}\ncommitted: {FITTED:?}");
    for t in &timings {
        let s = &t.shape;
        println!(
            "  {s:?}: keyswitch {:.2} ms (fit {:.2}), bootstrap {:.2} ms (fit {:.2})",
            1e3 * t.keyswitch,
            1e3 * fitted.keyswitch_seconds(s),
            1e3 * t.bootstrap,
            1e3 * fitted.bootstrap_seconds(s),
        );
    }
    if let Some(path) = json {
        let rows: Vec<String> = timings
            .iter()
            .map(|t| {
                format!(
                    "{{\"shape\": \"{:?}\", \"keyswitch_seconds\": {}, \"bootstrap_seconds\": {}}}",
                    t.shape, t.keyswitch, t.bootstrap
                )
            })
            .collect();
        std::fs::write(
            path,
            format!(
                "{{\"keyswitch\": {}, \"rotation\": {}, \"transform\": {}, \"multiply_add\": {}, \"samples\": [{}]}}\n",
                fitted.keyswitch,
                fitted.rotation,
                fitted.transform,
                fitted.multiply_add,
                rows.join(", ")
            ),
        )?;
    }
    Ok(())
}
