"""The 14B recipe: DeepSeek-R1-Distill-Qwen-14B compressed with TLDR, the official settings (TLDR_METHOD.md): those of
config/r1_7b.py but for the model and dev_batch_size (tests/test_plan.py checks that the two files agree on the rest).
    torchrun --nproc_per_node=8 train.py config/r1_14b.py --model=... --system1=... --system2=... --dev=... --bounds=...
(`make reproduce-14b` fills in the paths.) The official 14B run reports step 128."""
model = "models/DeepSeek-R1-Distill-Qwen-14B"  # make reproduce-14b sets it from MODEL_DIR
mixture = "dynamic"
w_short = 0.5
eta = 4.0
c = 1e-4
max_steps = 2000                # the official run reports step 128
global_batch = 64               # 8 sequences per GPU x 8 GPUs
row_tokens = 16384              # one packed row per micro-batch
max_len = 16000                 # longer examples are skipped and counted
lr = 1e-5
lr_schedule = "constant"
weight_decay = 0.0
grad_clip = 1.0
activation_checkpointing = True
eval_interval = 32
save_interval = 32
keep_checkpoints = 2
dev_max_new_tokens = 8192       # the same settings as the bounds (the official dev used 1.0 / 8192, bounds 0.7 / 16000)
dev_temperature = 0.7
dev_top_p = 1.0
dev_batch_size = 8              # KV-cache slots per GPU: 8 x 8.5k tokens x 196 KB = 13 GB (the 7B takes 32)
