"""`sara repro`: the study that trains and scores the alignment arms on the shapes world."""
