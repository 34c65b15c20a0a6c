"""The 7B recipe: DeepSeek-R1-Distill-Qwen-7B compressed with TLDR, the official settings (TLDR_METHOD.md).
    torchrun --nproc_per_node=8 train.py config/r1_7b.py --model=... --system1=... --system2=... --dev=... --bounds=...
(`make reproduce-7b` fills in the paths.) The README lists these next to the official ones."""
model = "models/DeepSeek-R1-Distill-Qwen-7B"  # make reproduce-7b sets it from MODEL_DIR
mixture = "dynamic"
w_short = 0.5
eta = 4.0
c = 1e-4
max_steps = 2000                # the official run reports step 256
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
dev_batch_size = 32             # KV-cache slots per GPU: 32 x 8.5k tokens x 57 KB = 16 GB
