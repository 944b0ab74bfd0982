//! (being filled in: issue 15, part 3/4)
