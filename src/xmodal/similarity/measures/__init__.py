"""The built-in metrics, one file each; importing this package registers them."""

from xmodal.similarity.measures import chi_square, cosine, euclidean, manhattan  # noqa: F401
