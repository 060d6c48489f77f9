"""One plausible wrong solution per exercise, with a mistake students make (the tests check that the checker catches it)."""
