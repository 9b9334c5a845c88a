import pickle, random, collections, torch
torch.set_num_threads(1)
from xraygpt_lab.eval.metrics import rouge, clinical_efficacy
from xraygpt_lab.data.labeler import label_report
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS as OBS
D=pickle.load(open("/tmp/h9/data.pkl","rb")); s1,ev=D["s1"],D["ev"]
LAT=("Pleural Effusion","Pneumothorax","Consolidation","Lung Lesion","Atelectasis","Fracture")
def key(fs, sev=False): return tuple(sorted((f.observation, f.side if f.observation in LAT else None)+((f.severity,) if sev else ()) for f in fs))
for sev in (False,True):
  idx=collections.defaultdict(list)
  for i,fs in enumerate(s1.findings): idx[key(fs,sev)].append(i)
  preds=[];refs=[];miss=0
  for j,fs in enumerate(ev.findings):
    c=idx.get(key(fs,sev))
    if not c: miss+=1; continue
    preds.append(s1.summaries[c[0]]); refs.append(ev.summaries[j])
  print("sev",sev,"matched",len(preds),"miss",miss,"rougeL retrieval",rouge(preds,refs)["rougeL"])
  ce=clinical_efficacy([label_report(p) for p in preds],[label_report(r) for r in refs],OBS); print("CE",ce["macro_f1"])
# normal-only baseline
nid=[i for i,fs in enumerate(s1.findings) if not fs][0]
print("all-normal rougeL",rouge([s1.summaries[nid]]*200,ev.summaries)["rougeL"])
print("prevalence ev", {o:sum(1 for l in ev.labels if l.get(o)==1) for o in OBS})
print(ev.findings[0]); print(ev.summaries[0])
