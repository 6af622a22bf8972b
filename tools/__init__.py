"""Scripts that make the README's pictures and check the model on images made apart from the tests,
and the pieces the tests share with them."""
