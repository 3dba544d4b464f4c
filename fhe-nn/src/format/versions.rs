//! The versions and names of serialized types, for TFHE-rs's safe serialization: a type
//! whose layout never changed has one version; one that changed lists its old layouts with
//! their upgrades by hand (see `fhe::compiled`'s compiled-model file).

/// Declares the only version of a serialized type and its name for TFHE-rs's safe
/// serialization.
macro_rules! versioned {
    ($vis:vis $ty:ident, $versions:ident, $name:literal) => {
        #[derive(tfhe_versionable::VersionsDispatch)]
        // Constructed by the derive's generated code only.
        #[allow(dead_code)]
        $vis enum $versions {
            V0($ty),
        }

        $crate::format::versions::named!($ty, $name);
    };
}

/// Names a serialized type for TFHE-rs's safe serialization (checked when it is read).
macro_rules! named {
    ($ty:ident, $name:literal) => {
        impl tfhe::named::Named for $ty {
            const NAME: &'static str = $name;
        }
    };
}

pub(crate) use {named, versioned};
