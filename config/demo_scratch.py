"""make demo: what training the long and the short model from scratch share (read before demo_long.py or
demo_short.py). A high lr with a cosine decay: the 0.46M-parameter models start from random weights."""
loss_norm = "token"             # pre-training from scratch: every token weighs the same
row_tokens = 1024
max_len = 1024
lr = 3e-3
lr_schedule = "cosine"
warmup_steps = 30
min_lr = 3e-4
beta2 = 0.95
keep_checkpoints = 1
