"""make demo: the short model M_S, trained from scratch on one-line answers (plain SFT), after
config/demo_scratch.py. It learns the easy problems (~95%) and guesses on hard ones (~30%), as an instruct
model does next to R1."""
mixture = "static"
w_short = 1.0
max_steps = 600
global_batch = 64
save_interval = 200
