"""`annotator distill`: the student in the loop labels a corpus for a fraction of the teacher calls."""
