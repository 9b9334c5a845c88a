import torch, time, pickle
from xraygpt_lab.train.walkthrough import make_split
t=time.time()
s1=make_split(1000,128,101); ev=make_split(200,128,303)
pickle.dump({"s1":s1,"ev":ev},open("/tmp/exp_lead/data.pkl","wb"))
print("data",time.time()-t)
