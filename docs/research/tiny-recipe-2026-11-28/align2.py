"""align2.py ENC(cnn_x.pt|enc_x.pt) LLMDIR steps lr batch"""
import torch, time, pickle, sys, math
torch.set_num_threads(1)
import torch.nn as nn
from xraygpt_lab.models.llm import load_llm
from xraygpt_lab.models.xraygpt import XrayGPT
from xraygpt_lab.train.align import AlignmentSet, align_stage
from xraygpt_lab.train.schedule import StageConfig
from xraygpt_lab.train.evaluation import evaluate_model
D=pickle.load(open("/tmp/h9/data.pkl","rb")); s1,ev=D["s1"],D["ev"]
encf,llmdir,steps,lr,B=sys.argv[1],sys.argv[2],int(sys.argv[3]),float(sys.argv[4]),int(sys.argv[5])
ck=torch.load(encf); w=ck["o"]["w"]
def blk(i,j): return [nn.Conv2d(i,j,3,2,1), nn.BatchNorm2d(j), nn.GELU(), nn.Conv2d(j,j,3,1,1), nn.BatchNorm2d(j), nn.GELU()]
net=nn.Sequential(*blk(1,w),*blk(w,2*w),*blk(2*w,4*w),*blk(4*w,8*w),*blk(8*w,128)); net.load_state_dict(ck["net"]); net.eval()
class Enc(nn.Module):
    token_dim=128
    def __init__(s): super().__init__(); s.net=net
    def encode_tokens(s,x): return s.net(x).flatten(2).transpose(1,2)
enc=Enc()
with torch.no_grad():
    f1=torch.cat([enc.encode_tokens(s1.pixels[i:i+100]) for i in range(0,1000,100)])
    fe=torch.cat([enc.encode_tokens(ev.pixels[i:i+100]) for i in range(0,200,100)])
llm,tok=load_llm(llmdir); model=XrayGPT(enc,llm,tok)
# optional init: least-squares map from tokens to concept/blank embeddings is NOT used (pure align_stage)
st=StageConfig(name="s1",steps=steps,batch_size=B,init_lr=lr,min_lr=lr/5,warmup_lr=1e-5,warmup_steps=20,seed=0,save_every=10**6)
t=time.time(); c=time.process_time(); r=align_stage(model,AlignmentSet(f1,s1.summaries),st,None,progress=False)
print("align wall",round(time.time()-t),"cpu",round(time.process_time()-c,1),r.history[0]["loss"],r.history[-1]["loss"],flush=True)
n=100; t=time.time()
m=evaluate_model(model,ev.summaries[:n],features=fe[:n],ground_truth=ev.labels[:n],max_new_tokens=140,n_boot=0)
print("eval wall",round(time.time()-t))
print("CE macro",round(m["ce_f1_macro"],3),"rougeL",round(m["rougeL"],3),"blind CE",round(m["baselines"]["image_blind"]["ce_f1_macro"],3),"blind rougeL",round(m["baselines"]["image_blind"]["rougeL"],3))
print({k[:6]:round(v["f1"] or 0,2) for k,v in m["per_observation"].items()})
print(m["examples"][0])
