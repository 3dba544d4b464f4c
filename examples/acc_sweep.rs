//! The accumulator-bound sweep: trains a shipped network under each declared bound (`acc`
//! on its first weighted layer, and on its output layer), compiles it, runs Fhe on a few
//! samples, and prints a table of bound → lookups → Clear accuracy → parameters → Fhe time →
//! key size; writes it as JSON and draws it as an SVG.
//!
//!     cargo run --release --example acc_sweep -- [--net card|seed|cnn] [--bounds none,10,9,9/8]
//!         [--samples N] [--p-error P] [--json FILE] [--svg FILE]
//!
//! A bound is `FIRST` or `FIRST/OUTPUT` (bits; `none` or `-` for no bound). Each row trains
//! with the network's shipped settings (`--epochs`, `--seed` to change them): about 35 s a
//! row for the card on 2 cores.

mod support;

use std::path::PathBuf;

use fhe_nn::datasets::{
    digits, mnist_5k, Card, Cnn, Seed, DIGITS_CNN_TRAINING, DIGITS_SEED_TRAINING,
    MNIST_CARD_TRAINING,
};
use fhe_nn::tensors::TensorFile;
use fhe_nn::Architecture;
use serde::Serialize;

/// Command line of the sweep.
#[derive(clap::Parser, Debug)]
#[command(
    about = "Trains a network under each declared accumulator bound and measures what it buys"
)]
struct Cli {
    /// The network: `card` (784-128-10 on MNIST), `seed` (64-30-30-10 on digits) or `cnn`.
    #[arg(long, default_value = "card")]
    net: String,
    /// Bounds to sweep, comma-separated: `FIRST` or `FIRST/OUTPUT` in bits, `none` or `-`
    /// for no bound [default: the network's sweep].
    #[arg(long, value_delimiter = ',')]
    bounds: Vec<String>,
    /// Write the plot to FILE [default: bench-results/acc_sweep_NET.svg].
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    #[command(flatten)]
    options: support::Options,
}

/// One bound: the declared widths of the first and the output layer's accumulators.
#[derive(Clone, Copy, Debug, Serialize)]
struct Bound {
    first: Option<u32>,
    output: Option<u32>,
}

impl Bound {
    fn parse(s: &str) -> Result<Bound, String> {
        let bits = |part: &str| -> Result<Option<u32>, String> {
            match part.trim() {
                "none" | "-" => Ok(None),
                b => b
                    .parse::<u32>()
                    .map(Some)
                    .map_err(|_| format!("`{s}`: a bound is FIRST or FIRST/OUTPUT in bits")),
            }
        };
        match s.split_once('/') {
            Some((first, output)) => Ok(Bound {
                first: bits(first)?,
                output: bits(output)?,
            }),
            None => Ok(Bound {
                first: bits(s)?,
                output: None,
            }),
        }
    }

    fn label(&self) -> String {
        let bits = |b: Option<u32>| b.map_or("none".to_string(), |b| b.to_string());
        match self.output {
            None => bits(self.first),
            Some(_) => format!("{}/{}", bits(self.first), bits(self.output)),
        }
    }
}

/// What one bound measured.
#[derive(Serialize)]
struct Row {
    bound: Bound,
    label: String,
    lookups: usize,
    clear_accuracy: f64,
    parameters: String,
    fhe_seconds: f64,
    key_megabytes: f64,
    keygen_seconds: f64,
    figures: support::Figures,
}

/// The JSON the sweep writes.
#[derive(Serialize)]
struct Sweep {
    network: String,
    p_error: f64,
    rows: Vec<Row>,
}

fn main() {
    use clap::Parser;
    let cli = Cli::parse();
    support::exit_on_error(sweep(cli));
}

fn sweep(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // The network: its name for the examples, architecture (its declared bounds are
    // replaced), data, training settings, and default sweep.
    let (name, arch, data, training, default_bounds): (_, &Architecture, _, _, &[&str]) =
        match cli.net.as_str() {
            "card" => (
                "mnist",
                Card::architecture(),
                mnist_5k()?,
                MNIST_CARD_TRAINING,
                &["none", "10", "9", "9/9", "9/8", "9/7", "8/8"],
            ),
            "seed" => (
                "digits",
                Seed::architecture(),
                digits()?,
                DIGITS_SEED_TRAINING,
                &["none", "10", "9", "9/9", "9/8", "8/8"],
            ),
            "cnn" => (
                "cnn",
                Cnn::architecture(),
                digits()?,
                DIGITS_CNN_TRAINING,
                // Its first convolution reads 6-bit accumulators: only the output can be bounded.
                &["none", "none/9", "none/8"],
            ),
            other => return Err(format!("unknown network `{other}` (card, seed or cnn)").into()),
        };
    let bounds = if cli.bounds.is_empty() {
        default_bounds.iter().map(|b| Bound::parse(b)).collect()
    } else {
        cli.bounds
            .iter()
            .map(|b| Bound::parse(b))
            .collect::<Result<Vec<_>, _>>()
    }?;
    let unbounded = without_bounds(arch)?;
    let samples = cli.options.samples.unwrap_or(3);
    let mut rows = Vec::new();
    for (i, bound) in bounds.iter().enumerate() {
        println!(
            "\n=== {} {} of {}: acc {}",
            cli.net,
            i + 1,
            bounds.len(),
            bound.label()
        );
        let options = support::Options {
            train: true,
            save: None,
            json: None,
            samples: Some(samples),
            acc: bound.first,
            output_acc: bound.output,
            ..cli.options.clone()
        };
        let figures = support::run(
            name,
            &unbounded,
            &data,
            TensorFile::default(),
            training.clone(),
            samples,
            &options,
        )?;
        let p = &figures.parameters;
        let last = p
            .last_layer_pbs
            .map_or(String::new(), |(b, l)| format!(", last 2^{b}×{l}"));
        rows.push(Row {
            bound: *bound,
            label: bound.label(),
            lookups: figures.lookups_per_inference,
            clear_accuracy: figures.clear.accuracy,
            parameters: format!(
                "n = {}, {}N = {}, PBS 2^{}×{}{last}",
                p.lwe_dimension,
                if p.glwe_dimension > 1 {
                    format!("k = {}, ", p.glwe_dimension)
                } else {
                    String::new()
                },
                p.polynomial_size,
                p.pbs_base_log,
                p.pbs_level
            ),
            fhe_seconds: figures.fhe.seconds_per_inference,
            key_megabytes: figures.evaluation_key_bytes as f64 / 1e6,
            keygen_seconds: figures.keygen_seconds,
            figures,
        });
    }

    println!(
        "\n{} at p_error 2^{:.0}, {samples} encrypted samples per row\n",
        cli.net,
        cli.options.p_error.log2()
    );
    println!("| `acc` (first/output) | lookups | Clear acc. | parameters | Fhe s/inference | eval. key MB | keygen s |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1}% | {} | {:.3} | {:.1} | {:.2} |",
            r.label,
            r.lookups,
            100.0 * r.clear_accuracy,
            r.parameters,
            r.fhe_seconds,
            r.key_megabytes,
            r.keygen_seconds
        );
    }
    let json = cli
        .options
        .json
        .clone()
        .unwrap_or_else(|| format!("bench-results/acc_sweep_{}.json", cli.net).into());
    let svg = cli
        .svg
        .clone()
        .unwrap_or_else(|| format!("bench-results/acc_sweep_{}.svg", cli.net).into());
    let drawing = plot(&cli.net, cli.options.p_error, &rows);
    support::write_json(
        &json,
        &Sweep {
            network: cli.net.clone(),
            p_error: cli.options.p_error,
            rows,
        },
    )?;
    if let Some(dir) = svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&svg, drawing)?;
    println!("\nwrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// `arch` with no declared accumulator bound (the sweep declares its own).
fn without_bounds(arch: &Architecture) -> Result<Architecture, String> {
    use fhe_nn::arch::layer::Layer;
    let mut layers = arch.layers().to_vec();
    for layer in &mut layers {
        match layer {
            Layer::QuantLinear { options, .. } => options.acc = None,
            Layer::QuantConv2d(conv) => conv.options.acc = None,
            _ => {}
        }
    }
    Architecture::new(arch.name(), layers).map_err(|e| e.to_string())
}

/// The sweep as an SVG: Fhe seconds per inference as bars (left axis, each labelled with its
/// evaluation key's size) and Clear accuracy as a line (right axis), one bound per column.
fn plot(net: &str, p_error: f64, rows: &[Row]) -> String {
    let (width, height) = (680.0, 380.0);
    let (left, right, top, bottom) = (60.0, 60.0, 44.0, 64.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let step = plot_w / rows.len().max(1) as f64;
    let max_s = rows
        .iter()
        .map(|r| r.fhe_seconds)
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.15;
    let accuracies = rows.iter().map(|r| 100.0 * r.clear_accuracy);
    let acc_lo = (accuracies.clone().fold(f64::INFINITY, f64::min) - 1.0).floor();
    let acc_hi = (accuracies.fold(f64::NEG_INFINITY, f64::max) + 1.0).ceil();
    let y_s = |s: f64| top + plot_h - s / max_s * plot_h;
    let y_acc = |a: f64| top + plot_h - (a - acc_lo) / (acc_hi - acc_lo).max(1.0) * plot_h;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{net}: declared accumulator bound vs Fhe time and Clear accuracy (p_error 2^{:.0})</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<line x1="{}" y1="{top}" x2="{}" y2="{}" stroke="black"/>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle" fill="steelblue">Fhe s / inference (bars)</text>
<text x="{}" y="{}" transform="rotate(90 {} {})" text-anchor="middle" fill="darkred">Clear accuracy % (line)</text>
<text x="{}" y="{}" text-anchor="middle">acc (first layer / output layer, bits); bar label: evaluation key MB</text>
"#,
        width / 2.0,
        p_error.log2(),
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h,
        left + plot_w,
        left + plot_w,
        top + plot_h,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        width - 16.0,
        top + plot_h / 2.0,
        width - 16.0,
        top + plot_h / 2.0,
        left + plot_w / 2.0,
        height - 16.0,
    );
    let s_step = if max_s > 4.0 {
        1.0
    } else if max_s > 1.0 {
        0.5
    } else {
        0.2
    };
    let mut tick = 0.0;
    while tick <= max_s {
        out += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick:.1}</text>\n",
            left - 8.0,
            y_s(tick) + 4.0
        );
        tick += s_step;
    }
    let mut tick = acc_lo;
    while tick <= acc_hi {
        out += &format!(
            "<text x=\"{}\" y=\"{:.1}\">{tick:.0}</text>\n",
            left + plot_w + 8.0,
            y_acc(tick) + 4.0
        );
        tick += 1.0;
    }
    let mut points = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let x = left + i as f64 * step + step * 0.2;
        let centre = x + step * 0.3;
        let y = y_s(r.fhe_seconds);
        out += &format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"steelblue\"/>\n",
            step * 0.6,
            top + plot_h - y
        );
        out += &format!(
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{:.1} MB</text>\n",
            y - 4.0,
            r.key_megabytes
        );
        out += &format!(
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            top + plot_h + 16.0,
            r.label
        );
        points.push((
            centre,
            y_acc(100.0 * r.clear_accuracy),
            100.0 * r.clear_accuracy,
        ));
    }
    let line: Vec<String> = points
        .iter()
        .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
        .collect();
    out += &format!(
        "<polyline fill=\"none\" stroke=\"darkred\" stroke-width=\"2\" points=\"{}\"/>\n",
        line.join(" ")
    );
    for (x, y, a) in points {
        out += &format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"darkred\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"darkred\">{a:.1}</text>\n",
            x + 5.0,
            y - 5.0
        );
    }
    out + "</svg>\n"
}
