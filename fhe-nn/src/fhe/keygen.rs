//! Fast generation of compressed (seeded) evaluation keys, bit-for-bit in TFHE-rs's layout.
//!
//! A seeded key holds only the bodies of its rows; the masks are regenerated from a public
//! seed by whoever decompresses it. Here the masks are regenerated exactly as TFHE-rs's
//! decompression will (the same functions), one generator per chunk of rows, so chunks run
//! in parallel (TFHE-rs makes keyswitching keys sequentially). TFHE-rs computes each
//! bootstrapping-key body's product `Σ mask_t · S_t` (64-bit mask polynomials times the
//! binary GLWE secret key) with Karatsuba, about two thirds of a client's key generation
//! time; here it is computed with the 64-bit FFT, exactly: each mask is split into three
//! signed digits of at most 2^21 in magnitude, so every coefficient of a digit's product
//! with a binary key stays below 2^21 · k · N ≤ 2^35 and the FFT's rounding error far below
//! 1/2 (`tests::products_are_exact`). Noise is drawn from TFHE-rs's CSPRNG-based samplers
//! with the set's distribution, from fresh OS seeds, as TFHE-rs's own key generation does.

use rayon::prelude::*;
use std::time::Duration;
use tfhe::core_crypto::commons::generators::MaskRandomGenerator;
use tfhe::core_crypto::commons::math::decomposition::DecompositionLevel;
use tfhe::core_crypto::commons::math::random::{CompressionSeed, RandomGenerator, Seed, Uniform};
use tfhe::core_crypto::prelude::*;
use tfhe::shortint;
use tfhe::shortint::atomic_pattern::compressed::{
    CompressedAtomicPatternServerKey, CompressedStandardAtomicPatternServerKey,
};
use tfhe::shortint::ciphertext::MaxDegree;
use tfhe::shortint::client_key::atomic_pattern::AtomicPatternClientKey;
use tfhe::shortint::parameters::ModulusSwitchType;
use tfhe::shortint::server_key::{
    CompressedModulusSwitchConfiguration, ShortintCompressedBootstrappingKey,
};
use tfhe_fft::c64;
use tfhe_fft::unordered::{Method, Plan};

/// Bits per digit of a mask coefficient (three digits cover 64 bits).
const DIGIT_BITS: u32 = 22;
const DIGITS: usize = 3;

/// The compressed server key of `key`, as `shortint::CompressedServerKey::new` makes it:
/// the keyswitching key from TFHE-rs, the bootstrapping key from [`seeded_bootstrap_key`].
/// Shapes fhe-nn's sets never have (multi-bit, 32-bit keyswitch, drift-technique modulus
/// switch) are left to TFHE-rs entirely.
pub(crate) fn compressed_server_key(key: &shortint::ClientKey) -> shortint::CompressedServerKey {
    let AtomicPatternClientKey::Standard(standard) = &key.atomic_pattern else {
        return shortint::CompressedServerKey::new(key);
    };
    let shortint::PBSParameters::PBS(pbs) = standard.parameters else {
        return shortint::CompressedServerKey::new(key);
    };
    let modulus_switch = match pbs.modulus_switch_noise_reduction_params {
        ModulusSwitchType::CenteredMeanNoiseReduction => {
            CompressedModulusSwitchConfiguration::CenteredMeanNoiseReduction
        }
        ModulusSwitchType::Standard => CompressedModulusSwitchConfiguration::Standard,
        ModulusSwitchType::DriftTechniqueNoiseReduction(_) => {
            return shortint::CompressedServerKey::new(key);
        }
    };
    let small = standard.small_lwe_secret_key();
    let large = standard.large_lwe_secret_key();
    let keyswitch = seeded_keyswitch_key(
        &large,
        &small,
        (pbs.ks_base_log, pbs.ks_level),
        pbs.lwe_noise_distribution,
        pbs.ciphertext_modulus,
    );
    let glwe = GlweSecretKey::from_container(large.as_ref(), pbs.polynomial_size);
    let bsk = seeded_bootstrap_key(
        &small,
        &glwe,
        pbs.pbs_base_log,
        pbs.pbs_level,
        pbs.glwe_noise_distribution,
        pbs.ciphertext_modulus,
    );
    let atomic = CompressedStandardAtomicPatternServerKey::from_raw_parts(
        keyswitch,
        ShortintCompressedBootstrappingKey::Classic {
            bsk,
            modulus_switch_noise_reduction_key: modulus_switch,
        },
        pbs.encryption_key_choice.into(),
    );
    let max_degree = MaxDegree::new(pbs.message_modulus.0 * pbs.carry_modulus.0 - 1);
    shortint::CompressedServerKey::from_raw_parts(
        CompressedAtomicPatternServerKey::Standard(atomic),
        pbs.message_modulus,
        pbs.carry_modulus,
        max_degree,
        pbs.max_noise_level,
    )
}

/// Consecutive chunks of `count` items for the available threads, about four per thread.
fn chunk_length(count: usize) -> usize {
    count.div_ceil(4 * rayon::current_num_threads()).max(1)
}

/// The mask generator of a seeded key with compression seed `seed`, positioned `bytes` into
/// its stream: where TFHE-rs's decompression forks the row that starts there.
fn masks_from(seed: &CompressionSeed, bytes: usize) -> MaskRandomGenerator<DefaultRandomGenerator> {
    let mut masks = MaskRandomGenerator::new(seed.clone());
    // A skip of zero bytes is refused (a fork needs a non-empty child).
    if bytes > 0 {
        masks.skip(EncryptionMaskByteCount(bytes));
    }
    masks
}

/// A seeded keyswitching key from the LWE secret `input` to the LWE secret `output`: what
/// TFHE-rs's `allocate_and_generate_new_seeded_lwe_keyswitch_key` makes (one seeded LWE
/// ciphertext per input key bit and level, from the highest level), in parallel. The masks
/// are regenerated by TFHE-rs's decompression of seeded LWE lists, one generator per chunk
/// positioned at the chunk's first ciphertext.
pub(crate) fn seeded_keyswitch_key(
    input: &LweSecretKey<&[u64]>,
    output: &LweSecretKey<&[u64]>,
    (base_log, levels): (DecompositionBaseLog, DecompositionLevelCount),
    noise: DynamicDistribution<u64>,
    modulus: CiphertextModulus<u64>,
) -> SeededLweKeyswitchKeyOwned<u64> {
    assert!(
        modulus.is_native_modulus(),
        "fhe-nn's sets use the native modulus"
    );
    let mut seeder = new_seeder();
    let mut ksk = SeededLweKeyswitchKey::new(
        0u64,
        base_log,
        levels,
        input.lwe_dimension(),
        output.lwe_dimension(),
        seeder.seed().into(),
        modulus,
    );
    let seed = ksk.compression_seed();
    let per_ciphertext = ksk
        .as_seeded_lwe_ciphertext_list()
        .decompression_fork_config(Uniform)
        .mask_byte_count_per_child()
        .0;
    let lwe_size = output.lwe_dimension().to_lwe_size();
    let chunk = chunk_length(ksk.as_ref().len());
    let noise_seeds: Vec<Seed> = (0..ksk.as_ref().len().div_ceil(chunk))
        .map(|_| seeder.seed())
        .collect();
    let secret = output.as_ref();
    ksk.as_mut()
        .par_chunks_mut(chunk)
        .zip(noise_seeds)
        .enumerate()
        .for_each(|(index, (bodies, noise_seed))| {
            let mut masks = masks_from(&seed, index * chunk * per_ciphertext);
            let mut full =
                LweCiphertextList::new(0u64, lwe_size, LweCiphertextCount(bodies.len()), modulus);
            decompress_seeded_lwe_ciphertext_list_with_pre_seeded_generator(
                &mut full,
                &SeededLweCiphertextList::from_container(&*bodies, lwe_size, seed.clone(), modulus),
                &mut masks,
            );
            let mut noise_generator = RandomGenerator::<DefaultRandomGenerator>::new(noise_seed);
            bodies.fill(0);
            add_noise(bodies, noise, &mut noise_generator);
            for (offset, (body, ciphertext)) in bodies
                .iter_mut()
                .zip(full.as_ref().chunks_exact(lwe_size.0))
                .enumerate()
            {
                let row = index * chunk + offset;
                // The key bit times the level's gadget factor, 2^(64 - base_log * level).
                let level = levels.0 - row % levels.0;
                let bit = input.as_ref()[row / levels.0];
                let message = bit << (64 - base_log.0 * level);
                let dot = ciphertext
                    .iter()
                    .zip(secret)
                    .fold(0u64, |sum, (&a, &s)| sum.wrapping_add(a.wrapping_mul(s)));
                *body = body.wrapping_add(message).wrapping_add(dot);
            }
        });
    ksk
}

/// A seeded bootstrapping key of the LWE secret `small` under the GLWE secret `glwe`, with
/// the decomposition `(base_log, levels)` and the bodies' `noise`: what TFHE-rs's
/// `par_allocate_and_generate_new_seeded_lwe_bootstrap_key` makes, several times faster.
pub(crate) fn seeded_bootstrap_key(
    small: &LweSecretKey<&[u64]>,
    glwe: &GlweSecretKey<&[u64]>,
    base_log: DecompositionBaseLog,
    levels: DecompositionLevelCount,
    noise: DynamicDistribution<u64>,
    modulus: CiphertextModulus<u64>,
) -> SeededLweBootstrapKeyOwned<u64> {
    assert!(
        modulus.is_native_modulus(),
        "fhe-nn's sets use the native modulus"
    );
    let glwe_size = glwe.glwe_dimension().to_glwe_size();
    let size = glwe.polynomial_size();
    let mut seeder = new_seeder();
    let mut bsk = SeededLweBootstrapKey::new(
        0u64,
        glwe_size,
        size,
        base_log,
        levels,
        small.lwe_dimension(),
        seeder.seed().into(),
        modulus,
    );
    let seed = bsk.compression_seed();
    let per_ggsw = bsk
        .decompression_fork_config(Uniform)
        .mask_byte_count_per_child()
        .0;
    let ggsw_bodies = levels.0 * glwe_size.0 * size.0;
    // Chunks of consecutive GGSWs, each with its own mask generator positioned where
    // TFHE-rs's decompression forks the chunk's first GGSW, and its own fresh noise seed.
    let chunk = chunk_length(small.lwe_dimension().0);
    let chunks = small.lwe_dimension().0.div_ceil(chunk);
    let noise_seeds: Vec<Seed> = (0..chunks).map(|_| seeder.seed()).collect();
    let products = KeyProducts::new(glwe);
    bsk.as_mut()
        .par_chunks_mut(chunk * ggsw_bodies)
        .zip(small.as_ref().par_chunks(chunk))
        .zip(noise_seeds)
        .enumerate()
        .for_each(|(index, ((bodies, bits), noise_seed))| {
            let mut masks = masks_from(&seed, index * chunk * per_ggsw);
            let mut noise_generator = RandomGenerator::<DefaultRandomGenerator>::new(noise_seed);
            let mut scratch = products.scratch();
            let mut full = GgswCiphertext::new(0u64, glwe_size, size, base_log, levels, modulus);
            for (bodies, &bit) in bodies.chunks_exact_mut(ggsw_bodies).zip(bits) {
                let seeded = SeededGgswCiphertext::from_container(
                    &*bodies,
                    glwe_size,
                    size,
                    base_log,
                    seed.clone(),
                    modulus,
                );
                decompress_seeded_ggsw_ciphertext_with_pre_seeded_generator(
                    &mut full, &seeded, &mut masks,
                );
                fill_bodies(
                    &products,
                    bit,
                    (base_log, levels),
                    noise,
                    full.as_ref(),
                    bodies,
                    (&mut noise_generator, &mut scratch),
                );
            }
        });
    bsk
}

/// Writes the bodies of one seeded GGSW encrypting `bit`, from the masks of its
/// decompressed form `full` (layout: levels from the highest, then `k + 1` rows, each `k`
/// mask polynomials and a body).
fn fill_bodies(
    products: &KeyProducts<'_>,
    bit: u64,
    (base_log, levels): (DecompositionBaseLog, DecompositionLevelCount),
    noise: DynamicDistribution<u64>,
    full: &[u64],
    bodies: &mut [u64],
    (noise_generator, scratch): (
        &mut RandomGenerator<DefaultRandomGenerator>,
        &mut ProductScratch,
    ),
) {
    let n = products.size;
    let k = products.keys.len();
    let modulus = CiphertextModulus::<u64>::new_native();
    for (index, (body, row)) in bodies
        .chunks_exact_mut(n)
        .zip(full.chunks_exact((k + 1) * n))
        .enumerate()
    {
        let (matrix, row_index) = (index / (k + 1), index % (k + 1));
        let level = DecompositionLevel(levels.0 - matrix);
        let factor =
            ggsw_encryption_multiplicative_factor(modulus, level, base_log, Cleartext(bit));
        // The message: factor · S_j in the j-th row, -factor in the constant of the last.
        if row_index < k {
            for (b, s) in body.iter_mut().zip(products.key_polynomial(row_index)) {
                *b = s.wrapping_mul(factor);
            }
        } else {
            body.fill(0);
            body[0] = factor.wrapping_neg();
        }
        add_noise(body, noise, noise_generator);
        products.add_product(body, &row[..k * n], scratch);
    }
}

/// Adds one sample of `noise` to each coefficient. A Gaussian is sampled in pairs: TFHE-rs's
/// polar method yields two independent samples per draw, of which its one-sample path keeps
/// one.
fn add_noise(
    body: &mut [u64],
    noise: DynamicDistribution<u64>,
    generator: &mut RandomGenerator<DefaultRandomGenerator>,
) {
    match noise {
        DynamicDistribution::Gaussian(gaussian) => {
            let mut pairs = body.chunks_exact_mut(2);
            for pair in &mut pairs {
                let (e0, e1): (u64, u64) = generator.random_from_distribution(gaussian);
                pair[0] = pair[0].wrapping_add(e0);
                pair[1] = pair[1].wrapping_add(e1);
            }
            for b in pairs.into_remainder() {
                let e: u64 = generator.random_from_distribution(gaussian);
                *b = b.wrapping_add(e);
            }
        }
        other => {
            for b in body.iter_mut() {
                let e: u64 = generator.random_from_distribution(other);
                *b = b.wrapping_add(e);
            }
        }
    }
}

/// The GLWE secret key's polynomials, in the Fourier domain, for exact products.
///
/// A negacyclic product of size `N` is a cyclic one of size `N / 2` over complex numbers:
/// coefficients `j` and `j + N/2` are folded into one, twisted by `e^{iπj/N}`.
struct KeyProducts<'a> {
    size: usize,
    plan: Plan,
    /// `e^{iπj/N}` for `j < N/2`.
    twist: Vec<c64>,
    /// The binary key polynomials as integers.
    key: &'a [u64],
    /// Their transforms.
    keys: Vec<Vec<c64>>,
}

/// Per-thread buffers of [`KeyProducts::add_product`].
struct ProductScratch {
    buffers: ComputationBuffers,
    transform: Vec<c64>,
    sums: Vec<Vec<c64>>,
    /// A mask's digits, as reals.
    split: Vec<[f64; DIGITS]>,
}

impl<'a> KeyProducts<'a> {
    fn new(glwe: &GlweSecretKey<&'a [u64]>) -> KeyProducts<'a> {
        let size = glwe.polynomial_size().0;
        let half = size / 2;
        // A short measurement: the plan serves one key generation, not the server.
        let plan = Plan::new(half, Method::Measure(Duration::from_millis(1)));
        let twist = (0..half)
            .map(|j| {
                let angle = std::f64::consts::PI * j as f64 / size as f64;
                c64::new(angle.cos(), angle.sin())
            })
            .collect();
        let mut products = KeyProducts {
            size,
            plan,
            twist,
            key: glwe.clone().into_container(),
            keys: Vec::new(),
        };
        let mut scratch = products.scratch();
        for polynomial in glwe.as_ref().chunks_exact(size) {
            assert!(
                polynomial.iter().all(|&s| s <= 1),
                "exact FFT products need a binary GLWE key"
            );
            let mut transform = vec![c64::default(); half];
            products.forward(
                &mut transform,
                |j| polynomial[j] as f64,
                &mut scratch.buffers,
            );
            products.keys.push(transform);
        }
        products
    }

    fn key_polynomial(&self, index: usize) -> &[u64] {
        &self.key[index * self.size..(index + 1) * self.size]
    }

    fn scratch(&self) -> ProductScratch {
        let mut buffers = ComputationBuffers::new();
        buffers.resize(self.plan.fft_scratch().unaligned_bytes_required());
        let half = self.size / 2;
        ProductScratch {
            buffers,
            transform: vec![c64::default(); half],
            sums: vec![vec![c64::default(); half]; DIGITS],
            split: vec![[0.0; DIGITS]; self.size],
        }
    }

    /// The transform of the real polynomial whose `j`-th coefficient is `value(j)`.
    fn forward(
        &self,
        out: &mut [c64],
        value: impl Fn(usize) -> f64,
        buffers: &mut ComputationBuffers,
    ) {
        let half = self.size / 2;
        for (j, (z, w)) in out.iter_mut().zip(&self.twist).enumerate() {
            *z = c64::new(value(j), value(j + half)) * *w;
        }
        self.plan.fwd(out, buffers.stack());
    }

    /// `body += Σ_t mask_t · S_t` (negacyclic, modulo 2^64), exactly.
    fn add_product(&self, body: &mut [u64], masks: &[u64], scratch: &mut ProductScratch) {
        let half = self.size / 2;
        for sum in &mut scratch.sums {
            sum.fill(c64::default());
        }
        let ProductScratch {
            buffers,
            transform,
            sums,
            split,
        } = scratch;
        for (mask, key) in masks.chunks_exact(self.size).zip(&self.keys) {
            for (out, &a) in split.iter_mut().zip(mask) {
                *out = digits(a).map(|d| d as i64 as f64);
            }
            for (d, sum) in sums.iter_mut().enumerate() {
                self.forward(transform, |j| split[j][d], buffers);
                for ((s, &x), &y) in sum.iter_mut().zip(transform.iter()).zip(key) {
                    *s += x * y;
                }
            }
        }
        let scale = 1.0 / half as f64;
        for (d, sum) in sums.iter_mut().enumerate() {
            self.plan.inv(sum, buffers.stack());
            let shift = d as u32 * DIGIT_BITS;
            for (j, (z, w)) in sum.iter().zip(&self.twist).enumerate() {
                let value = *z * w.conj() * scale;
                // Each coefficient is an integer below 2^35 in magnitude: rounding is exact.
                let low = value.re.round() as i64 as u64;
                let high = value.im.round() as i64 as u64;
                body[j] = body[j].wrapping_add(low << shift);
                body[j + half] = body[j + half].wrapping_add(high << shift);
            }
        }
    }
}

/// The signed digits of `a` in base 2^22, balanced (each in [-2^21, 2^21), the top one,
/// 20 bits wide, in [-2^19, 2^19)), as two's complement u64s: `Σ_d digits[d] << 22d = a`
/// modulo 2^64.
fn digits(a: u64) -> [u64; DIGITS] {
    let mut out = [0u64; DIGITS];
    let mut rest = a;
    for (d, slot) in out.iter_mut().enumerate() {
        let shift = d as u32 * DIGIT_BITS;
        let bits = DIGIT_BITS.min(64 - shift);
        let raw = (rest >> shift) & ((1u64 << bits) - 1);
        // Sign-extend the `bits`-bit field: values at or above half wrap to negatives.
        let signed = ((raw << (64 - bits)) as i64) >> (64 - bits);
        *slot = signed as u64;
        rest = rest.wrapping_sub((signed as u64) << shift);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use tfhe::core_crypto::algorithms::polynomial_algorithms::polynomial_wrapping_add_multisum_assign;

    fn binary_key(rng: &mut SplitMix64, k: usize, n: usize) -> GlweSecretKeyOwned<u64> {
        let bits = (0..k * n).map(|_| rng.next_u64() & 1).collect();
        GlweSecretKey::from_container(bits, PolynomialSize(n))
    }

    /// TFHE-rs's (Karatsuba) product, the reference.
    fn reference(body: &[u64], masks: &[u64], key: &GlweSecretKeyOwned<u64>) -> Vec<u64> {
        let size = key.polynomial_size();
        let mut out = Polynomial::from_container(body.to_vec());
        polynomial_wrapping_add_multisum_assign(
            &mut out,
            &PolynomialList::from_container(masks, size),
            &key.as_polynomial_list(),
        );
        out.into_container()
    }

    #[test]
    fn digits_recompose_and_stay_small() {
        let mut rng = SplitMix64::new(7);
        let samples = (0..10_000).map(|_| rng.next_u64());
        let edges = [
            0,
            1,
            u64::MAX,
            1 << 63,
            (1 << 63) - 1,
            0x2000_0000_0020_0000,
        ];
        for a in samples.chain(edges) {
            let d = digits(a);
            let sum = d.iter().enumerate().fold(0u64, |s, (i, &x)| {
                s.wrapping_add(x << (i as u32 * DIGIT_BITS))
            });
            assert_eq!(sum, a, "{a:#x}");
            assert!(
                d.iter().all(|&x| (x as i64).unsigned_abs() <= 1 << 21),
                "{d:?}"
            );
        }
    }

    #[test]
    fn products_are_exact() {
        let mut rng = SplitMix64::new(11);
        for (k, n) in [(1, 256), (2, 1024), (4, 512), (1, 4096), (1, 16384)] {
            let key = binary_key(&mut rng, k, n);
            let products = KeyProducts::new(&key.as_view());
            let mut scratch = products.scratch();
            for _ in 0..3 {
                let masks: Vec<u64> = (0..k * n).map(|_| rng.next_u64()).collect();
                let body: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
                let mut ours = body.clone();
                products.add_product(&mut ours, &masks, &mut scratch);
                assert_eq!(ours, reference(&body, &masks, &key), "k={k} N={n}");
            }
            // The largest products: every key bit 1, every digit at its most negative.
            let ones = GlweSecretKey::from_container(vec![1u64; k * n], PolynomialSize(n));
            let products = KeyProducts::new(&ones.as_view());
            let mut scratch = products.scratch();
            let worst = 0u64
                .wrapping_sub(1 << 21)
                .wrapping_sub(1 << 43)
                .wrapping_sub(1 << 63);
            assert_eq!(
                digits(worst).map(|d| d as i64),
                [-(1 << 21), -(1 << 21), -(1 << 19)]
            );
            let masks = vec![worst; k * n];
            let mut ours = vec![0u64; n];
            products.add_product(&mut ours, &masks, &mut scratch);
            assert_eq!(
                ours,
                reference(&vec![0; n], &masks, &ones),
                "worst, k={k} N={n}"
            );
        }
    }

    /// The key TFHE-rs decompresses encrypts the LWE secret bit by bit, with noise of the
    /// asked deviation.
    #[test]
    fn ggsws_decrypt_to_the_secret_with_the_asked_noise() {
        let mut rng = SplitMix64::new(3);
        let sigma = 2f64.powi(-40);
        for (k, n, base_log, levels) in [(1, 512, 10, 2), (2, 256, 15, 1), (1, 1024, 6, 3)] {
            let small = LweSecretKey::from_container(
                (0..24).map(|_| rng.next_u64() & 1).collect::<Vec<u64>>(),
            );
            let glwe = binary_key(&mut rng, k, n);
            let (base_log, levels) = (
                DecompositionBaseLog(base_log),
                DecompositionLevelCount(levels),
            );
            let modulus = CiphertextModulus::new_native();
            let noise = DynamicDistribution::new_gaussian_from_std_dev(StandardDev(sigma));
            let seeded = seeded_bootstrap_key(
                &small.as_view(),
                &glwe.as_view(),
                base_log,
                levels,
                noise,
                modulus,
            );
            let bsk = seeded.par_decompress_into_lwe_bootstrap_key();
            let mut errors = Vec::new();
            for (ggsw, &bit) in bsk.iter().zip(small.as_ref()) {
                let decrypted = decrypt_constant_ggsw_ciphertext(&glwe, &ggsw);
                assert_eq!(decrypted.0, bit, "k={k} N={n}");
                for (index, row) in ggsw.as_glwe_list().iter().enumerate() {
                    let (matrix, row_index) = (index / (k + 1), index % (k + 1));
                    let level = DecompositionLevel(levels.0 - matrix);
                    let factor = ggsw_encryption_multiplicative_factor(
                        modulus,
                        level,
                        base_log,
                        Cleartext(bit),
                    );
                    let mut phase = PlaintextList::new(0u64, PlaintextCount(n));
                    decrypt_glwe_ciphertext(&glwe, &row, &mut phase);
                    let expected: Vec<u64> = if row_index < k {
                        let s = &glwe.as_ref()[row_index * n..(row_index + 1) * n];
                        s.iter().map(|&b| b.wrapping_mul(factor)).collect()
                    } else {
                        let mut m = vec![0u64; n];
                        m[0] = factor.wrapping_neg();
                        m
                    };
                    for (p, m) in phase.as_ref().iter().zip(expected) {
                        errors.push(p.wrapping_sub(m) as i64 as f64 / 2f64.powi(64));
                    }
                }
            }
            let (mean, std) = moments(&errors);
            let count = errors.len() as f64;
            assert!(
                mean.abs() < 5.0 * sigma / count.sqrt(),
                "mean {mean:e}, k={k} N={n}"
            );
            assert!(
                (0.96..1.04).contains(&(std / sigma)),
                "std {std:e} for {sigma:e}, k={k} N={n}"
            );
        }
    }

    /// Mean and deviation of the torus errors.
    fn moments(errors: &[f64]) -> (f64, f64) {
        let count = errors.len() as f64;
        let mean = errors.iter().sum::<f64>() / count;
        let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / count;
        (mean, var.sqrt())
    }

    /// TFHE-rs's decompression of the keyswitching key gives, at every input bit and level,
    /// an encryption of the bit times the level's gadget factor with the asked noise (odd
    /// output dimensions included: mask generators positioned mid-block).
    #[test]
    fn keyswitch_rows_decrypt_to_the_gadget_terms() {
        let mut rng = SplitMix64::new(5);
        let sigma = 2f64.powi(-40);
        for (inputs, outputs, base_log, levels) in [(1000, 37, 4, 3), (512, 64, 2, 7)] {
            let bits = |n: usize, rng: &mut SplitMix64| {
                LweSecretKey::from_container(
                    (0..n).map(|_| rng.next_u64() & 1).collect::<Vec<u64>>(),
                )
            };
            let (input, output) = (bits(inputs, &mut rng), bits(outputs, &mut rng));
            let noise = DynamicDistribution::new_gaussian_from_std_dev(StandardDev(sigma));
            let seeded = seeded_keyswitch_key(
                &input.as_view(),
                &output.as_view(),
                (
                    DecompositionBaseLog(base_log),
                    DecompositionLevelCount(levels),
                ),
                noise,
                CiphertextModulus::new_native(),
            );
            let ksk = seeded.decompress_into_lwe_keyswitch_key();
            let mut errors = Vec::new();
            for (row, ciphertext) in ksk.as_lwe_ciphertext_list().iter().enumerate() {
                let level = levels - row % levels;
                let expected = input.as_ref()[row / levels] << (64 - base_log * level);
                let phase = decrypt_lwe_ciphertext(&output, &ciphertext).0;
                errors.push(phase.wrapping_sub(expected) as i64 as f64 / 2f64.powi(64));
            }
            let (mean, std) = moments(&errors);
            assert!(
                mean.abs() < 5.0 * sigma / (errors.len() as f64).sqrt(),
                "mean {mean:e}, {inputs} -> {outputs}"
            );
            assert!(
                (0.9..1.1).contains(&(std / sigma)),
                "std {std:e} for {sigma:e}, {inputs} -> {outputs}"
            );
        }
    }

    /// Everything but the key material is what TFHE-rs makes, and the decompressed key
    /// evaluates lookups (a vetted set with k = 4: four key polynomials per product).
    #[test]
    fn the_server_key_is_tfhe_rs_s_but_for_its_random_parts() {
        let set = crate::params::vetted(2).expect("a vetted 2-bit set");
        let key = shortint::ClientKey::new(set.params);
        let (ours, message, carry, degree, noise) = compressed_server_key(&key).into_raw_parts();
        let (theirs, message_t, carry_t, degree_t, noise_t) =
            shortint::CompressedServerKey::new(&key).into_raw_parts();
        assert_eq!(
            (message, carry, degree, noise),
            (message_t, carry_t, degree_t, noise_t)
        );
        let (
            CompressedAtomicPatternServerKey::Standard(ours),
            CompressedAtomicPatternServerKey::Standard(theirs),
        ) = (ours, theirs)
        else {
            panic!("standard atomic patterns")
        };
        let (ksk, bsk, order) = ours.into_raw_parts();
        let (ksk_t, bsk_t, order_t) = theirs.into_raw_parts();
        assert_eq!(order, order_t);
        let ksk_shape = |k: &SeededLweKeyswitchKeyOwned<u64>| {
            (
                k.input_key_lwe_dimension(),
                k.output_key_lwe_dimension(),
                k.decomposition_base_log(),
                k.decomposition_level_count(),
                k.as_ref().len(),
            )
        };
        assert_eq!(ksk_shape(&ksk), ksk_shape(&ksk_t));
        let (
            ShortintCompressedBootstrappingKey::Classic {
                bsk,
                modulus_switch_noise_reduction_key: switch,
            },
            ShortintCompressedBootstrappingKey::Classic {
                bsk: bsk_t,
                modulus_switch_noise_reduction_key: switch_t,
            },
        ) = (bsk, bsk_t)
        else {
            panic!("classic bootstrapping keys")
        };
        assert_eq!(switch, switch_t);
        let bsk_shape = |b: &SeededLweBootstrapKeyOwned<u64>| {
            (
                b.input_lwe_dimension(),
                b.glwe_size(),
                b.polynomial_size(),
                b.decomposition_base_log(),
                b.decomposition_level_count(),
                b.as_ref().len(),
            )
        };
        assert_eq!(bsk_shape(&bsk), bsk_shape(&bsk_t));
        assert_ne!(bsk.as_ref(), bsk_t.as_ref(), "fresh randomness");
        // The whole shortint path on the decompressed key: a NOT on its 1-bit messages.
        let server = compressed_server_key(&key).decompress();
        let table = server.generate_lookup_table(|x| (x + 1) % 2);
        for x in [0, 1, 1, 0, 1, 0] {
            let ct = key.encrypt(x);
            assert_eq!(key.decrypt(&server.apply_lookup_table(&ct, &table)), 1 - x);
        }
    }
}
