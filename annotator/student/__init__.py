"""``annotator train-student``: distil the teacher's labels into a small encoder classifier and evaluate it."""
