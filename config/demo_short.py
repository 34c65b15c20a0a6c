"""make demo: the short model M_S, trained from scratch on one-line answers (plain SFT).
It learns the easy problems (~95%) and guesses on hard ones (~30%), as an instruct model does next to R1."""
mixture = "static"
w_short = 1.0
max_steps = 600
global_batch = 64
row_tokens = 1024
max_len = 1024
lr = 3e-3
lr_schedule = "cosine"
warmup_steps = 30
min_lr = 3e-4
beta2 = 0.95
save_interval = 200
keep_checkpoints = 1
