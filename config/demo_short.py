"""make demo: the short model M_S, trained from scratch on answers without reasoning (plain SFT)."""
mixture = "static"
w_short = 1.0
max_steps = 300
global_batch = 32
row_tokens = 1024
max_len = 1024
lr = 3e-3
lr_schedule = "cosine"
warmup_steps = 30
min_lr = 3e-4
save_interval = 300
keep_checkpoints = 1
