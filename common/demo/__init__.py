"""The demo teacher's shipped weights (`vl2v serve --model demo`); its world is `cache.data.world`."""
