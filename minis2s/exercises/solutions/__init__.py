"""Solutions that call the library's own functions (they pass by construction; the tests run them)."""
