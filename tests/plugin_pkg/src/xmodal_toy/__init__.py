"""Toy xmodal plugins: solid-colour images, colour-word captions, and what it takes to retrieve
one from the other."""

#: the colours of the toy data set, with their RGB values
COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "purple": (140, 30, 160),
    "orange": (240, 140, 20),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "brown": (120, 70, 20),
}
