"""Stage two: train the quantum student from a teacher cache only."""
