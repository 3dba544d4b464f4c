//! The versions and names of serialized types, for TFHE-rs's safe serialization (used by
//! every layer that writes a type to bytes).

/// Declares the versions of a serialized type and its name for TFHE-rs's safe serialization.
macro_rules! versioned {
    ($vis:vis $ty:ident, $versions:ident, $name:literal) => {
        #[derive(tfhe_versionable::VersionsDispatch)]
        #[allow(dead_code)]
        $vis enum $versions {
            V0($ty),
        }

        impl tfhe::named::Named for $ty {
            const NAME: &'static str = $name;
        }
    };
}

pub(crate) use versioned;
