//! Room in a request's extensions for what the layers put there.

use std::sync::OnceLock;

use http::Extensions;

/// Gives a request that has no extensions yet a map with room for those
/// the layers add. `http::Extensions` starts without a table and doubles it
/// as it fills: three allocations and two rehashes by the dozenth insert,
/// on every request. It has no `reserve`, but a clone of an empty map keeps
/// the capacity, so the request starts with a clone of one made with room:
/// one allocation. A request that already has extensions is left as it is.
pub(crate) fn make_room(extensions: &mut Extensions) {
    static WITH_ROOM: OnceLock<Extensions> = OnceLock::new();
    if extensions.is_empty() {
        *extensions = WITH_ROOM.get_or_init(with_room).clone();
    }
}

/// An empty map with room for 28 entries without growing: this crate's
/// (peer address, axum's `ConnectInfo`, arrival, request and trace ids,
/// client key, budget, body limits), axum's (matched path, path
/// parameters) and the application's. Filled with as many distinct types,
/// then emptied: removing never shrinks it.
fn with_room() -> Extensions {
    #[derive(Clone, Copy)]
    struct Filler<const N: usize>;

    macro_rules! fill {
        ($extensions:ident, $($n:literal)*) => {
            $( $extensions.insert(Filler::<$n>); )*
            $( $extensions.remove::<Filler<$n>>(); )*
        };
    }
    let mut extensions = Extensions::new();
    fill!(extensions, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27);
    debug_assert!(extensions.is_empty());
    extensions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_extensions_gets_an_empty_map() {
        let mut extensions = Extensions::new();
        make_room(&mut extensions);
        assert!(extensions.is_empty());
        extensions.insert(7u32);
        assert_eq!(extensions.get::<u32>(), Some(&7));
    }

    #[test]
    fn extensions_already_there_are_kept() {
        let mut extensions = Extensions::new();
        extensions.insert("kept");
        make_room(&mut extensions);
        assert_eq!(extensions.get::<&str>(), Some(&"kept"));
        assert_eq!(extensions.len(), 1);
    }
}
