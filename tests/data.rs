//! The shipped data sets load with their fixed, documented splits.

use fhe_nn::datasets::{digits, load, mnist_5k};

#[test]
fn digits_split_is_fixed_and_complete() {
    let d = digits().unwrap();
    assert_eq!(d.train.images.dim(), (1437, 64));
    assert_eq!(d.test.images.dim(), (360, 64));
    assert_eq!(d.max_pixel, 16.0);
    // Every class appears in the test split, and the split does not depend on the run.
    for class in 0..10 {
        assert!(
            d.test.labels.iter().filter(|&&l| l == class).count() >= 20,
            "class {class}"
        );
    }
    // The split is the documented one: an independent implementation (Python, SplitMix64
    // seeded 42, Fisher-Yates over the file's rows) gives these first test labels and sum.
    assert_eq!(
        d.test.labels.iter().take(12).copied().collect::<Vec<_>>(),
        vec![5, 4, 9, 6, 2, 9, 3, 9, 0, 4, 4, 2]
    );
    assert_eq!(d.test.labels.sum(), 1591);
    // The 1,797 rows hold 174 to 183 of each class (UCI's counts).
    let total = |c| {
        d.train
            .labels
            .iter()
            .chain(d.test.labels.iter())
            .filter(|&&l| l == c)
            .count()
    };
    assert!((0..10).all(|c| (174..=183).contains(&total(c))));
}

#[test]
fn mnist_split_is_fixed() {
    let m = mnist_5k().unwrap();
    assert_eq!(m.train.images.dim(), (4000, 784));
    assert_eq!(m.test.images.dim(), (1000, 784));
    let per_class: Vec<usize> = (0..10)
        .map(|c| {
            m.train
                .labels
                .iter()
                .chain(m.test.labels.iter())
                .filter(|&&l| l == c)
                .count()
        })
        .collect();
    assert_eq!(per_class, vec![500; 10]);
    // The documented split, as an independent implementation computes it.
    assert_eq!(
        m.test.labels.iter().take(12).copied().collect::<Vec<_>>(),
        vec![7, 1, 1, 2, 8, 6, 6, 2, 4, 8, 0, 7]
    );
    assert_eq!(m.test.labels.sum(), 4586);
    assert!(m.test.images.iter().any(|&p| p == 255.0));
}

#[test]
fn malformed_files_are_reported_with_their_line() {
    let dir = std::env::temp_dir().join(format!("fhe-nn-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, b"1,2,3\n1,x,3\n").unwrap();
    std::fs::write(&path, enc.finish().unwrap()).unwrap();
    let err = load(&path, 2, 1, 16.0).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("`x`"), "{err}");
    let missing = load(&dir.join("absent.csv.gz"), 2, 1, 16.0)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("cannot read"), "{missing}");
}
