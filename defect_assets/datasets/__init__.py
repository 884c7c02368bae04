"""Data sets the project can seed a landing zone with: real ELPV cells, synthetic surfaces."""
