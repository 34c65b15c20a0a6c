"""The 7B recipe: DeepSeek-R1-Distill-Qwen-7B compressed with TLDR, the official run's settings.
    torchrun --nproc_per_node=8 train.py config/r1_7b.py --model=... --system1=... --system2=... --dev=... --bounds=...
(`make reproduce-7b` fills in the paths.) Sources are in the official release (github zzli2022/TLDR at a460888):
T7 = train_script/train_7B_1_vs_1/max_step_2000_eval_step_32_init_1_vs_1.sh, CB = src/train_dynamic_lora/
dynamic_callback.py, HF = transformers 4.46.3 as it pins (requirement.txt:155). config/official.json holds the
official values with their sources and every difference with its reason; tests/test_recipe.py checks them."""
model = "models/DeepSeek-R1-Distill-Qwen-7B"  # make reproduce-7b sets it from MODEL_DIR
mixture = "dynamic"             # UPDATE_TAG=1 (T7:14)
w_short = 0.5                   # data/system_1_2_config/cot_domain_data_info_7b_system_1_vs_1_init.json:5,10
eta = 4.0                       # ETA=4 (T7:27)
c = 1e-4                        # CB:66
max_steps = 2000                # T7:122; the official run reports step 256
global_batch = 8                # --per_device_train_batch_size 8 with --split_batches True over 8 processes (T7:126,
                                # 143, HF training_args.py:1763-1769): the global batch, one sequence per GPU
loss_norm = "sequence"          # HF's per-device token mean of that one sequence, averaged over the GPUs
row_tokens = 16384              # one packed row per micro-batch
max_len = 16000                 # model_max_length (T7:123); the official run truncates, we skip and count
lr = 1e-5                       # T7:138
lr_schedule = "constant"        # T7:141 (its warmup_ratio 0.01, T7:140, does nothing under constant)
weight_decay = 0.0              # T7:139
grad_clip = 1.0                 # HF's default max_grad_norm (training_args.py:898)
eps = 1e-8                      # HF's default adam_epsilon (training_args.py:897), torch's AdamW
activation_checkpointing = True  # T7:144
eval_interval = 32              # T7:133-134
save_interval = 32              # T7:135-137
keep_checkpoints = 2
dev_max_new_tokens = 8192       # T7:129; the bounds must use the same (the official: 0.7 / 0.95 / 16000)
dev_temperature = 0.7           # the official dev evaluation samples at 1.0; the bounds at 0.7: one setting for both
dev_top_p = 1.0
dev_batch_size = 32             # KV-cache slots per GPU: 32 x 9k tokens x 57 KB = 16 GB
