"""The 14B recipe: DeepSeek-R1-Distill-Qwen-14B compressed with TLDR. The official settings are the 7B ones,
read from config/r1_7b.py; this file holds what differs:
    torchrun --nproc_per_node=8 train.py config/r1_14b.py --model=... --system1=... --system2=... --dev=... --bounds=...
(`make reproduce-14b` fills in the paths.) The official 14B run reports step 128."""
base = "r1_7b.py"
model = "models/DeepSeek-R1-Distill-Qwen-14B"  # make reproduce-14b sets it from MODEL_DIR
dev_batch_size = 8              # KV-cache slots per GPU: 8 x 8.5k tokens x 196 KB = 13 GB (the 7B takes 32)
