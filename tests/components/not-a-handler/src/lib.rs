//! Test fixture: a valid component that targets another world (`test:other`)
//! and so does not export `logpipe:handler/handler`. The host must refuse it.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export answer: func() -> u32;
        }
    ",
});

struct Answer;

impl Guest for Answer {
    fn answer() -> u32 {
        42
    }
}

export!(Answer);
